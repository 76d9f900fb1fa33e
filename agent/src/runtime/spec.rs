//! The template's `container` section: the one parser lives in
//! `flotilla_common::spec`, shared with the controller's validation, so
//! what the controller accepts at apply is what this agent can run.

pub use flotilla_common::spec::*;
