#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| relocd_tests::fuzz_entry::cert_names(data));
