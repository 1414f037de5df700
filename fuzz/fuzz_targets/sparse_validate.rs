#![no_main]
//! See `edgellm_fuzzing::sparse_validate`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    edgellm_fuzzing::sparse_validate(data);
});
