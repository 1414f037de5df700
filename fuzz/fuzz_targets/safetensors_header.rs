#![no_main]
//! See `edgellm_fuzzing::safetensors_header`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    edgellm_fuzzing::safetensors_header(data);
});
