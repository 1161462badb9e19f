//! Errors raised to SQL callers: a message and a SQLSTATE, never a Rust panic text.
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

/// Raises `message` with `code` as a PostgreSQL ERROR. The transaction aborts, so no partial rows.
pub fn raise(code: PgSqlErrorCode, message: impl Into<String>) -> ! {
    ErrorReport::new(code, message.into(), "saas_core").report(PgLogLevel::ERROR);
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

/// Unwraps a required argument, raising 22004 when it is NULL.
pub fn required<T>(value: Option<T>, name: &str) -> T {
    value.unwrap_or_else(|| null_argument(name))
}
