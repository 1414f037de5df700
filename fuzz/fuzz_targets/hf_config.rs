#![no_main]
//! See `edgellm_fuzzing::hf_config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    edgellm_fuzzing::hf_config(data);
});
