#![no_main]
//! See `edgellm_fuzzing::gguf_structured`.

libfuzzer_sys::fuzz_target!(init: edgellm_fuzzing::warm("gguf_structured"), |data: &[u8]| {
    edgellm_fuzzing::gguf_structured(data);
});
