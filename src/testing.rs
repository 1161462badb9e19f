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

/// Runs SQL in a subtransaction and returns the error it raised, if any (rolled back, so the
/// test goes on), as "SQLSTATE: message".
pub fn error_of(sql: &str) -> Option<String> {
    match crate::spi::in_subtransaction(|| Spi::run(sql)) {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(error) => Some(error),
    }
}
