//! Helpers for the `#[pg_test]`s of every module: acting as a user, and catching an error.
use pgrx::prelude::*;

/// The request's JWT names `id`; the session keeps its role (a superuser, who is also the
/// service role: RPCs take their member paths for members).
pub fn claims_of(id: &str) {
    Spi::run(&format!(
        "SELECT set_config('request.jwt.claims', '{{\"sub\":\"{id}\",\"role\":\"authenticated\"}}', true)"
    ))
    .unwrap();
}

/// As PostgREST runs a signed-in request: the role `authenticated`, and the JWT naming `id`.
pub fn act_as(id: &str) {
    Spi::run("RESET ROLE; SET LOCAL ROLE authenticated").unwrap();
    claims_of(id);
}

/// For `#[pg_test]`s: runs SQL in a subtransaction and returns the error it raised, if any
/// (rolled back, so the test goes on), as "SQLSTATE: message".
pub fn error_of(sql: &str) -> Option<String> {
    use pgrx::pg_sys::panic::CaughtError;
    // SAFETY: the subtransaction is begun and ended here, restoring the memory context and
    // resource owner as PL/pgSQL's exception blocks do.
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        let error = PgTryBuilder::new(|| Spi::run(sql).map_err(|e| e.to_string()).err())
            .catch_others(|e| {
                Some(match e {
                    CaughtError::PostgresError(report) | CaughtError::ErrorReport(report) => {
                        format!("{:?}: {}", report.sql_error_code(), report.message())
                    }
                    CaughtError::RustPanic { ereport, .. } => {
                        format!("panic: {}", ereport.message())
                    }
                })
            })
            .execute();
        pg_sys::MemoryContextSwitchTo(context);
        if error.is_none() {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
        error
    }
}
