//! The C interface to ckpt, built as `libckpt.so` and `libckpt.a` with the
//! header `include/ckpt.h`.
//!
//! Two APIs:
//!
//! - [`xc`]: a drop-in for libxc's checkpoint compression
//!   (`xc_compression_*`), the symbols a Remus sender of Xen 4.1 to 4.5 calls,
//!   with their return values and semantics. A sender switches by relinking.
//!   Its output is the page encoding of `FORMAT.md` §1 with the delta cache of
//!   §2, byte for byte the original's.
//! - [`native`]: a sender that writes a checkpoint stream (`docs/STREAM.md`)
//!   to a file descriptor and a receiver that reads one and applies each
//!   verified checkpoint to caller memory, for toolstacks that want the whole
//!   engine.
//!
//! Every function checks its pointers for NULL and returns its error value
//! rather than crash; a panic inside the engine is caught at the boundary and
//! reported as [`CKPT_ERR_INTERNAL`] (or the drop-in's error value). What a
//! call cannot check (that a non-NULL pointer points at enough valid memory)
//! is the caller's contract, stated in each function's `# Safety` section.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};

pub mod native;
pub mod xc;

/// Success.
pub const CKPT_OK: i32 = 0;
/// An argument is invalid: a NULL pointer, a page type with no meaning, an
/// unusable file descriptor or memory size.
pub const CKPT_ERR_INVALID: i32 = -1;
/// A call out of order: a page outside a checkpoint, a checkpoint begun
/// twice, or any call after the sender or receiver stopped on an error.
pub const CKPT_ERR_ORDER: i32 = -2;
/// A PFN at or past the guest's page count, or a page given for a type that
/// carries none (or none for one that does).
pub const CKPT_ERR_PAGE: i32 = -3;
/// Reading or writing the file descriptor failed.
pub const CKPT_ERR_IO: i32 = -4;
/// The stream is malformed or a checkpoint failed verification; guest memory
/// still holds the last checkpoint applied.
pub const CKPT_ERR_STREAM: i32 = -5;
/// The stream ended in the middle of a checkpoint (the sender stopped or the
/// connection was cut); guest memory still holds the last checkpoint applied.
pub const CKPT_ERR_TRUNCATED: i32 = -6;
/// An internal failure (worker threads could not start, or a bug was caught
/// at the boundary).
pub const CKPT_ERR_INTERNAL: i32 = -7;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `msg` as this thread's last error.
pub(crate) fn set_error(msg: impl Display) {
    // An interior NUL cannot come from the engine's messages; drop any.
    let text = msg.to_string().replace('\0', " ");
    let c = CString::new(text).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Runs `f`, turning a panic into `on_panic` and an error message, so that
/// no unwind crosses into C.
pub(crate) fn guard<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_error(format!("internal error: {what}"));
            on_panic
        }
    }
}

/// The message of the last error on the calling thread, for every function
/// of this library (the drop-in's included); an empty string when there was
/// none. The text stays valid until the next call into the library on the
/// same thread; the library owns it.
#[no_mangle]
pub extern "C" fn ckpt_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}
