//! Helpers for the `#[pg_test]`s of every module: signing up, acting as a user, and catching an
//! error.
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

/// Signs up a user `id` with `email` (as GoTrue would, into auth.users) and answers the id of
/// the personal organization saas_core made for them.
pub fn personal_organization_of_new_user(id: &str, email: &str) -> String {
    Spi::run(&format!(
        "INSERT INTO auth.users (id, email) VALUES ('{id}', '{email}')"
    ))
    .unwrap();
    Spi::get_one::<String>(&format!(
        "SELECT id::text FROM organizations WHERE owner_id = '{id}'"
    ))
    .unwrap()
    .unwrap()
}
