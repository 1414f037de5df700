#![no_main]
//! See `edgellm_fuzzing::safetensors_header`.

libfuzzer_sys::fuzz_target!(init: edgellm_fuzzing::warm("safetensors_header"), |data: &[u8]| {
    edgellm_fuzzing::safetensors_header(data);
});
