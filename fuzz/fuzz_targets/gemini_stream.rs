#![no_main]

// See shardgate_fuzz::gemini_stream (fuzz/src/lib.rs) for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| shardgate_fuzz::gemini_stream(data));
