#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lowkey::fuzz::queue(data));
