//! Errors raised to SQL callers: a message and a SQLSTATE, never Rust internals.
//!
//! Every refusal goes through `raise`, which reports through PostgreSQL's own `ereport`
//! machinery with "saas_core" as its location: no Rust file name reaches the client.
//! Failures that would be bugs (an SPI call that cannot fail on a well-formed database) go
//! through `internal`, which reports a fixed message and keeps the details in the server log.
//! The panic hook installed at load time captures no backtrace and records no source
//! location, whatever `RUST_BACKTRACE` says.
use std::ffi::{c_char, c_int, CString};

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

// The ereport() entry points; pgrx keeps them out of its bindings.
unsafe extern "C-unwind" {
    fn errstart(elevel: c_int, domain: *const c_char) -> bool;
    fn errcode(sqlerrcode: c_int) -> c_int;
    fn errmsg(fmt: *const c_char, ...) -> c_int;
    fn errhint(fmt: *const c_char, ...) -> c_int;
    fn errfinish(filename: *const c_char, lineno: c_int, funcname: *const c_char);
}

fn c_text(text: &str) -> CString {
    CString::new(text.replace('\0', "")).unwrap_or_default()
}

/// Raises `message` with `code` as a PostgreSQL ERROR. The transaction aborts, so no partial rows.
pub fn raise(code: PgSqlErrorCode, message: impl Into<String>) -> ! {
    report(code, &message.into(), None)
}

/// As `raise`, with a hint telling the caller what to do instead.
pub fn raise_with_hint(code: PgSqlErrorCode, message: impl Into<String>, hint: &str) -> ! {
    report(code, &message.into(), Some(hint))
}

fn report(code: PgSqlErrorCode, message: &str, hint: Option<&str>) -> ! {
    let message = c_text(message);
    let hint = hint.map(c_text);
    // SAFETY: PostgreSQL's ereport(ERROR, ...) sequence; the guard turns its longjmp into a
    // Rust unwind that pgrx re-raises at the function boundary. The strings outlive the call.
    unsafe {
        pg_sys::ffi::pg_guard_ffi_boundary(|| {
            if errstart(pg_sys::PGERROR as c_int, std::ptr::null()) {
                errcode(code as c_int);
                errmsg(c"%s".as_ptr(), message.as_ptr());
                if let Some(hint) = &hint {
                    errhint(c"%s".as_ptr(), hint.as_ptr());
                }
                errfinish(c"saas_core".as_ptr(), 0, c"saas_core".as_ptr());
            }
        });
    }
    unreachable!("an ERROR report does not return")
}

/// 22023: an argument is out of its domain.
pub fn invalid_parameter(message: impl Into<String>) -> ! {
    raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message)
}

/// 22004: a required argument is NULL.
pub fn null_argument(name: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        format!("{name} must not be NULL"),
    )
}

/// 42501: the caller may not do this.
pub fn insufficient_privilege(message: impl Into<String>) -> ! {
    raise(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, message)
}

/// 23505: the name (username, slug) belongs to someone else.
pub fn unique_violation(message: impl Into<String>) -> ! {
    raise(PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION, message)
}

/// 55000: the object is not in a state that allows this (e.g. removing an organization's owner).
pub fn not_in_prerequisite_state(message: impl Into<String>, hint: &str) -> ! {
    raise_with_hint(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        message,
        hint,
    )
}

/// XX000 with a fixed message: something that cannot fail on a well-formed database did.
/// The details go to the server log only.
pub fn internal(what: &str, detail: impl std::fmt::Display) -> ! {
    pgrx::log!("saas_core: internal error while {what}: {detail}");
    raise(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("saas_core: internal error while {what} (details in the server log)"),
    )
}

/// Unwraps a required argument, raising 22004 when it is NULL.
pub fn required<T>(value: Option<T>, name: &str) -> T {
    value.unwrap_or_else(|| null_argument(name))
}

/// Replaces pgrx's panic hook, which captures a backtrace (when `RUST_BACKTRACE` is set) and
/// the panic's source location into the next error report. A panic is a bug: its message goes
/// to the server log, and the client gets the error without Rust internals attached.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        // PostgreSQL errors and our own reports travel as panic payloads too: not worth a line.
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned());
        if let Some(message) = message {
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            eprintln!("saas_core: panic{at}: {message}");
        }
    }));
}
