#![no_main]
//! See `edgellm_fuzzing::tokenizer_wordpiece`.

libfuzzer_sys::fuzz_target!(init: edgellm_fuzzing::warm("tokenizer_wordpiece"), |data: &[u8]| {
    edgellm_fuzzing::tokenizer_wordpiece(data);
});
