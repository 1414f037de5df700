#![no_main]
//! See `edgellm_fuzzing::tokenizer_spm`.

libfuzzer_sys::fuzz_target!(init: edgellm_fuzzing::warm("tokenizer_spm"), |data: &[u8]| {
    edgellm_fuzzing::tokenizer_spm(data);
});
