//! The preamble ("FLOT" + protocol version) both sides read first: any
//! bytes give a version or a refusal.

#![no_main]

use flotilla_common::wire::{handshake, PROTOCOL_VERSION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flotilla_fuzz::runtime().block_on(async {
        let mut stream = data;
        if let Ok(version) = handshake::receive(&mut stream, PROTOCOL_VERSION).await {
            assert_eq!(version, PROTOCOL_VERSION);
            assert!(data.len() >= 8 && data.starts_with(b"FLOT"));
        }
    });
});
