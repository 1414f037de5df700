#![no_main]
//! See `edgellm_fuzzing::tokenizer_bpe`.

libfuzzer_sys::fuzz_target!(init: edgellm_fuzzing::warm("tokenizer_bpe"), |data: &[u8]| {
    edgellm_fuzzing::tokenizer_bpe(data);
});
