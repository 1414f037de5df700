#![no_main]
//! See `edgellm_fuzzing::tokenizer_spm`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    edgellm_fuzzing::tokenizer_spm(data);
});
