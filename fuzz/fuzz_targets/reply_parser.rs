#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| messageu_fuzz::reply_parser::check(data));
