//! Arbitrary bytes as a `.json` policy file: `PolicyFile::parse` never panics and answers coherently.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ricochet_fuzz::policy_file::check("fuzz.json", data));
