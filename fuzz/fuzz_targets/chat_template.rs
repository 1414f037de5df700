#![no_main]
//! See `edgellm_fuzzing::chat_template`.

libfuzzer_sys::fuzz_target!(init: edgellm_fuzzing::warm("chat_template"), |data: &[u8]| {
    edgellm_fuzzing::chat_template(data);
});
