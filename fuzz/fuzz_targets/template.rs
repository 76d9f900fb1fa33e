//! The template validator, on any JSON a caller can send to apply or
//! update: it lists problems or accepts, never panics.

#![no_main]

use flotilla_controller::template::validate::validate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Err(problems) = validate(&body) {
            assert!(!problems.is_empty(), "a refusal lists its problems");
        }
    }
});
