//! libFuzzer entry for [`molt_fuzz::delta`], where the input layout and invariants are documented.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| molt_fuzz::delta::check(data));
