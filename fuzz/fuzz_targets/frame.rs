//! The fleet link's frame decoder, on both sides: whatever bytes a peer
//! sends, reading frames ends in a message, a clean end or an error, never
//! a panic, a hang or an allocation past the frame cap.

#![no_main]

use flotilla_common::wire::frame;
use flotilla_common::wire::messages::{AgentMessage, ControllerMessage};
use libfuzzer_sys::fuzz_target;

/// The cap the controller reads agents' frames with (its default).
const MAX_FRAME: usize = 4 * 1024 * 1024;

fuzz_target!(|data: &[u8]| {
    // One payload, as each side decodes it.
    let _ = frame::decode::<AgentMessage>(data);
    let _ = frame::decode::<ControllerMessage>(data);
    // A stream of length-prefixed frames, read until it ends or fails.
    flotilla_fuzz::runtime().block_on(async {
        let mut stream = data;
        while let Ok(Some(_)) = frame::read::<_, AgentMessage>(&mut stream, MAX_FRAME).await {}
        let mut stream = data;
        while let Ok(Some(_)) = frame::read::<_, ControllerMessage>(&mut stream, MAX_FRAME).await {}
    });
});
