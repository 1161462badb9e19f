//! Errors raised to SQL callers: a message and a SQLSTATE, never Rust internals.
//!
//! Every refusal goes through `raise`. Failures that would be bugs (an SPI call that cannot
//! fail on a well-formed database) go through `internal`, which reports a fixed message and
//! keeps the details in the server log. The panic hook installed at load time captures no
//! backtrace and records no source location, whatever `RUST_BACKTRACE` says.
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

/// Raises `message` with `code` as a PostgreSQL ERROR. The transaction aborts, so no partial rows.
pub fn raise(code: PgSqlErrorCode, message: impl Into<String>) -> ! {
    ErrorReport::new(code, message.into(), "saas_core").report(PgLogLevel::ERROR);
    unreachable!("an ERROR report does not return")
}

/// As `raise`, with a hint telling the caller what to do instead.
pub fn raise_with_hint(code: PgSqlErrorCode, message: impl Into<String>, hint: &str) -> ! {
    ErrorReport::new(code, message.into(), "saas_core")
        .set_hint(hint)
        .report(PgLogLevel::ERROR);
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
