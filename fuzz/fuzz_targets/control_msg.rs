#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    relocd_tests::fuzz_entry::control_msg(data);
});
