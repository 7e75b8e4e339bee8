//! SIGINT and SIGTERM as a request to stop: an apply stops at its next step, a lock wait and
//! a watch pause give up early. Below everything that waits or applies (lock, apply,
//! reconcile, watch).

/// The signal that interrupted this process (`SIGINT`, `SIGTERM`), set by the handlers
/// [`catch_interrupts`] installs.
static SIGNALLED: std::sync::OnceLock<(
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
)> = std::sync::OnceLock::new();

/// Makes SIGINT (Ctrl-C) and SIGTERM interrupt an apply instead of killing the process: the
/// first one is only recorded ([`interrupted`]); the apply stops at its next step, reports and
/// releases its lock. A second one exits at once with 128 + the signal's number.
pub fn catch_interrupts() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let (any, which) = SIGNALLED.get_or_init(Default::default);
    for signal in [SIGINT, SIGTERM] {
        // Registered first, so it sees only an earlier signal.
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, any.clone())?;
        signal_hook::flag::register_usize(signal, which.clone(), signal as usize)?;
        signal_hook::flag::register(signal, any.clone())?;
    }
    Ok(())
}

/// Returns the signal that interrupted this process since [`catch_interrupts`], if any.
pub fn interrupted() -> Option<i32> {
    use std::sync::atomic::Ordering;
    let (any, which) = SIGNALLED.get()?;
    any.load(Ordering::SeqCst)
        .then(|| which.load(Ordering::SeqCst) as i32)
}
