//! An enrollment request as an unauthenticated VM sends it: the frame is
//! read with the controller's enrollment cap, the instance id checked, and
//! the CSR parsed and signed by a real fleet CA. Nothing in it may panic
//! the controller.

#![no_main]

use flotilla_common::wire::frame;
use flotilla_common::wire::messages::EnrollRequest;
use flotilla_controller::fleet::enroll::{valid_instance_id, MAX_ENROLL_FRAME};
use flotilla_controller::fleet::pki::Pki;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

struct Fixture {
    pki: Pki,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let pki = Pki::load_or_create(dir.path()).expect("a fleet CA");
        Fixture {
            pki,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    // The request as the bytes of the enrollment stream (length prefix
    // included), and as a bare payload.
    let mut stream = data;
    let framed = flotilla_fuzz::runtime().block_on(frame::read::<_, EnrollRequest>(&mut stream, MAX_ENROLL_FRAME));
    let bare = frame::decode::<EnrollRequest>(data);
    for request in [framed.ok().flatten(), bare.ok()].into_iter().flatten() {
        if valid_instance_id(&request.instance_id) {
            let _ = fixture.pki.sign_agent("ag-fuzz", &request.csr_der);
        }
    }
    // The CSR parser also on the raw bytes, where most inputs land.
    let _ = fixture.pki.sign_agent("ag-fuzz", data);
});
