#![no_main]
//! See `edgellm_fuzzing::server_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    edgellm_fuzzing::server_request(data);
});
