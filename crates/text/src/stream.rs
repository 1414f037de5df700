//! Incremental decoding for streaming generated text.

use crate::Tokenizer;

/// Turns token ids, one at a time, into text as soon as it is complete UTF-8.
///
/// A character whose bytes are spread over several tokens (common for emoji and CJK in
/// byte-level BPE) is held back until its last byte arrives, so the text handed out never holds a
/// broken character. Bytes that can never become valid UTF-8 give U+FFFD where they stand;
/// [`flush`](Self::flush) hands out what is left at the end (lossily).
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    /// Bytes received but not yet handed out: at most one incomplete character (< 4 bytes).
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// An empty decoder.
    pub fn new() -> StreamDecoder {
        StreamDecoder::default()
    }

    /// Feed one token; returns the text it completes (often empty mid-character).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> String {
        let mut out = String::new();
        self.push_into(tokenizer.piece(id), &mut out);
        out
    }

    /// Feed one token's bytes, appending the completed text to `out` (no allocation once `out`
    /// has capacity).
    pub fn push_into(&mut self, bytes: &[u8], out: &mut String) {
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = start + e.valid_up_to();
                    // `valid_up_to` bytes were just checked: this never falls back.
                    out.push_str(std::str::from_utf8(&self.pending[start..valid]).unwrap_or_default());
                    match e.error_len() {
                        // Bytes that no continuation can repair.
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start = valid + n;
                        }
                        // An incomplete character at the end: wait for more.
                        None => {
                            start = valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
    }

    /// Whether bytes of an unfinished character are held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// End of stream: the held-back bytes (U+FFFD for an unfinished character), and reset.
    pub fn flush(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_split_characters() {
        let mut d = StreamDecoder::new();
        let mut out = String::new();
        let emoji = "🙂".as_bytes();
        d.push_into(&emoji[..1], &mut out);
        d.push_into(&emoji[1..3], &mut out);
        assert_eq!(out, "");
        assert!(d.has_pending());
        d.push_into(&[emoji[3], b'a'], &mut out);
        assert_eq!(out, "🙂a");
        assert!(!d.has_pending());
    }

    #[test]
    fn invalid_bytes_become_replacement_in_place() {
        let mut d = StreamDecoder::new();
        let mut out = String::new();
        d.push_into(b"a\xffb\xe4\xb8", &mut out);
        assert_eq!(out, "a\u{fffd}b");
        assert_eq!(d.flush(), "\u{fffd}");
        assert!(!d.has_pending());
    }
}
