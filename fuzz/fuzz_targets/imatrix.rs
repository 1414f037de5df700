#![no_main]
//! See `edgellm_fuzzing::imatrix`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    edgellm_fuzzing::imatrix(data);
});
