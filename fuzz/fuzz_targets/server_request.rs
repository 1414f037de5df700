#![no_main]
//! See `edgellm_fuzzing::server_request`.

libfuzzer_sys::fuzz_target!(init: edgellm_fuzzing::warm("server_request"), |data: &[u8]| {
    edgellm_fuzzing::server_request(data);
});
