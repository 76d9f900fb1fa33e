//! What the fuzz targets share.

use std::sync::OnceLock;

/// One current-thread runtime for a target's whole run: the decoders are
/// async, and a runtime per input would cost more than the input.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}
