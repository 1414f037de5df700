#![no_main]
//! See `edgellm_fuzzing::sparse_validate`.

libfuzzer_sys::fuzz_target!(init: edgellm_fuzzing::warm("sparse_validate"), |data: &[u8]| {
    edgellm_fuzzing::sparse_validate(data);
});
