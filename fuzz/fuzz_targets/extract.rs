//! libFuzzer entry for [`molt_fuzz::extract`], where the input layout and invariants are documented.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| molt_fuzz::extract::check(data));
