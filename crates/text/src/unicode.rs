//! Unicode facts the tokenizers need: the three character classes of the GPT-2 style
//! pre-tokenizers (`\p{L}`, `\p{N}`, `\s`) and the GPT-2 byte-to-character alphabet.
//!
//! The class tables are taken from `regex-syntax` (the tables Rust's `regex` and `fancy-regex`
//! use), so the hand-written splitters and the regex-driven ones agree on every code point.
//! llama.cpp generates its own tables from `UnicodeData.txt`; the two differ only on code points
//! added in a newer Unicode version than the one llama.cpp was generated from.

use std::sync::OnceLock;

use regex_syntax::hir::{Class, HirKind};

/// `\p{L}`: a letter (Lu, Ll, Lt, Lm, Lo).
pub const LETTER: u8 = 1;
/// `\p{N}`: a number (Nd, Nl, No).
pub const NUMBER: u8 = 2;
/// `\s`: Unicode `White_Space`.
pub const WHITESPACE: u8 = 4;

/// Sorted, disjoint code point ranges `(first, last, flags)`.
struct Table {
    ascii: [u8; 128],
    ranges: Vec<(u32, u32, u8)>,
}

fn class_ranges(pattern: &str) -> Vec<(u32, u32)> {
    // The patterns are constants of this module; parsing them cannot fail.
    let hir = regex_syntax::Parser::new().parse(pattern).expect("constant character class");
    match hir.kind() {
        HirKind::Class(Class::Unicode(c)) => {
            c.ranges().iter().map(|r| (r.start() as u32, r.end() as u32)).collect()
        }
        other => unreachable!("{pattern} parsed to {other:?}, not a Unicode class"),
    }
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut ranges = Vec::new();
        for (pattern, flag) in [(r"\p{L}", LETTER), (r"\p{N}", NUMBER), (r"\s", WHITESPACE)] {
            ranges.extend(class_ranges(pattern).into_iter().map(|(a, b)| (a, b, flag)));
        }
        ranges.sort_unstable();
        let mut ascii = [0u8; 128];
        for (c, slot) in ascii.iter_mut().enumerate() {
            *slot = lookup(&ranges, c as u32);
        }
        Table { ascii, ranges }
    })
}

fn lookup(ranges: &[(u32, u32, u8)], c: u32) -> u8 {
    // The three classes are disjoint, so at most one range holds `c`.
    let i = ranges.partition_point(|r| r.1 < c);
    match ranges.get(i) {
        Some(&(a, _, f)) if a <= c => f,
        _ => 0,
    }
}

/// The class flags of `c`: one of [`LETTER`], [`NUMBER`], [`WHITESPACE`], or 0 for anything else.
#[inline]
pub fn flags(c: char) -> u8 {
    let t = table();
    if (c as u32) < 128 {
        t.ascii[c as usize]
    } else {
        lookup(&t.ranges, c as u32)
    }
}

/// Whether `c` is `\p{L}`.
#[inline]
pub fn is_letter(c: char) -> bool {
    flags(c) == LETTER
}

/// Whether `c` is `\p{N}`.
#[inline]
pub fn is_number(c: char) -> bool {
    flags(c) == NUMBER
}

/// Whether `c` is `\s`.
#[inline]
pub fn is_whitespace(c: char) -> bool {
    flags(c) == WHITESPACE
}

/// GPT-2's byte alphabet: byte `b` is written as the character `BYTE_TO_CHAR[b]`. Printable
/// bytes (`!`..=`~`, `¡`..=`¬`, `®`..=`ÿ`) stand for themselves; the other 68 bytes, in order, are
/// shifted to U+0100.. so that no byte maps to whitespace or a control character.
pub static BYTE_TO_CHAR: [char; 256] = byte_to_char();

const fn is_printable_byte(b: u32) -> bool {
    (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
}

const fn byte_to_char() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    let mut b = 0u32;
    while b < 256 {
        let c = if is_printable_byte(b) {
            b
        } else {
            n += 1;
            255 + n
        };
        out[b as usize] = match char::from_u32(c) {
            Some(c) => c,
            None => panic!("GPT-2 alphabet stays below U+0144"),
        };
        b += 1;
    }
    out
}

/// Highest code point of the GPT-2 byte alphabet, plus one.
const ALPHABET_END: usize = 256 + 68;

static CHAR_TO_BYTE: [u16; ALPHABET_END] = char_to_byte();

const fn char_to_byte() -> [u16; ALPHABET_END] {
    let mut out = [u16::MAX; ALPHABET_END];
    let mut b = 0;
    while b < 256 {
        out[BYTE_TO_CHAR[b] as usize] = b as u16;
        b += 1;
    }
    out
}

/// The byte a character of the GPT-2 alphabet stands for, or `None` for any other character.
#[inline]
pub fn char_to_byte_value(c: char) -> Option<u8> {
    match CHAR_TO_BYTE.get(c as usize) {
        Some(&b) if b != u16::MAX => Some(b as u8),
        _ => None,
    }
}

/// Undo the byte-level mapping of a vocabulary string: characters of the GPT-2 alphabet become
/// their bytes; any other character (not produced by the mapping) is kept as its UTF-8.
pub fn decode_byte_level(s: &str, out: &mut Vec<u8>) {
    for c in s.chars() {
        match char_to_byte_value(c) {
            Some(b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_round_trips() {
        for b in 0..=255u8 {
            assert_eq!(char_to_byte_value(BYTE_TO_CHAR[b as usize]), Some(b));
        }
        assert_eq!(BYTE_TO_CHAR[b' ' as usize], 'Ġ');
        assert_eq!(BYTE_TO_CHAR[b'\n' as usize], 'Ċ');
        assert_eq!(BYTE_TO_CHAR[b'A' as usize], 'A');
        assert_eq!(BYTE_TO_CHAR[0xAD], 'Ń');
        assert_eq!(char_to_byte_value('中'), None);
    }

    #[test]
    fn classes() {
        assert!(is_letter('a') && is_letter('é') && is_letter('中') && is_letter('ア'));
        assert!(is_number('7') && is_number('²') && is_number('٣') && is_number('Ⅻ'));
        assert!(is_whitespace(' ') && is_whitespace('\n') && is_whitespace('\u{3000}'));
        assert!(is_whitespace('\u{85}') && is_whitespace('\u{a0}'));
        assert_eq!(flags('!'), 0);
        assert_eq!(flags('🙂'), 0);
        assert_eq!(flags('\u{301}'), 0); // combining accent: \p{M}
    }
}
