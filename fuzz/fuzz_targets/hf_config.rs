#![no_main]
//! See `edgellm_fuzzing::hf_config`.

libfuzzer_sys::fuzz_target!(init: edgellm_fuzzing::warm("hf_config"), |data: &[u8]| {
    edgellm_fuzzing::hf_config(data);
});
