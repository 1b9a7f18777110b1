#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| messageu_fuzz::request_stream::check(data));
