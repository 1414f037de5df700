#![no_main]
//! See `edgellm_fuzzing::gguf_structured`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    edgellm_fuzzing::gguf_structured(data);
});
