#![no_main]
//! See `edgellm_fuzzing::gguf_reader`.

libfuzzer_sys::fuzz_target!(init: edgellm_fuzzing::warm("gguf_reader"), |data: &[u8]| {
    edgellm_fuzzing::gguf_reader(data);
});
