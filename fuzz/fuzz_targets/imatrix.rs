#![no_main]
//! See `edgellm_fuzzing::imatrix`.

libfuzzer_sys::fuzz_target!(init: edgellm_fuzzing::warm("imatrix"), |data: &[u8]| {
    edgellm_fuzzing::imatrix(data);
});
