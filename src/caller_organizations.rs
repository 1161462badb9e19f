//! `current_user_org_ids(roles)`: the organizations the caller (`auth.uid()`) belongs to,
//! which every member policy asks for once per statement (sql/organizations.sql).
//!
//! It reads `organization_members_user_id_idx` directly, under the statement's snapshot,
//! instead of running a query: a query on `organization_members` would meet that table's own
//! policy, which asks this function again, so it used to be a SECURITY DEFINER PL/pgSQL
//! function, and switching user and search_path, planning and a result set for every RLS
//! statement cost more than the rows it reads. Reading the index bypasses RLS as the
//! SECURITY DEFINER function did, and returns only the caller's own memberships, which the
//! caller may read anyway. Names are looked up in the function's own schema at every call, so
//! nothing is cached across DROP/CREATE EXTENSION.
use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::auth_context;
use crate::errors;
use crate::index_reads::{self, Key, Probe};

const MEMBERS: &CStr = c"organization_members";
const MEMBERS_BY_USER: &CStr = c"organization_members_user_id_idx";

/// PostgreSQL's version-1 calling convention, for the symbol below (declared in SQL, not by
/// `#[pg_extern]`: its SQL needs `ROWS 10` and a default, and it reads `fcinfo`).
#[no_mangle]
#[doc(hidden)]
pub extern "C" fn pg_finfo_current_user_org_ids_wrapper() -> &'static pg_sys::Pg_finfo_record {
    static V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

/// `current_user_org_ids(roles text[] DEFAULT NULL) RETURNS SETOF uuid`: a materialized set.
///
/// # Safety
/// Called by PostgreSQL's function manager with a valid `fcinfo` for this function.
#[no_mangle]
#[doc(hidden)]
#[pg_guard]
pub unsafe extern "C-unwind" fn current_user_org_ids_wrapper(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: fcinfo is the function manager's; roles is its one (text[]) argument.
    let roles: Option<Vec<Option<String>>> = unsafe { pgrx::fcinfo::pg_getarg(fcinfo, 0) };
    let roles: Option<Vec<String>> = roles.map(|r| r.into_iter().flatten().collect());
    let uid = auth_context::current_uid_connecting();
    // SAFETY: as above; the set is built in the memory and descriptor PostgreSQL prepared.
    unsafe {
        pg_sys::InitMaterializedSRF(fcinfo, pg_sys::MAT_SRF_USE_EXPECTED_DESC);
        let rsinfo = (*fcinfo).resultinfo as *mut pg_sys::ReturnSetInfo;
        if let Some(uid) = uid {
            let flinfo = (*fcinfo).flinfo;
            if flinfo.is_null() {
                errors::internal("reading the caller's memberships", "called without flinfo");
            }
            let schema = pg_sys::get_func_namespace((*flinfo).fn_oid);
            for_each_membership(schema, uid, |org, role| {
                if roles.as_ref().is_none_or(|r| r.iter().any(|x| x == role)) {
                    let mut isnull = false;
                    pg_sys::tuplestore_putvalues(
                        (*rsinfo).setResult,
                        (*rsinfo).setDesc,
                        &org as *const pg_sys::Datum as *mut pg_sys::Datum,
                        &mut isnull,
                    );
                }
            });
        }
    }
    pg_sys::Datum::from(0)
}

/// Calls `f(organization_id, role)` for each row of `organization_members` of `user` visible
/// to the statement's snapshot, through the index on `(user_id, organization_id, role)`.
/// `f` copies the datum it keeps (it points into a pinned buffer).
fn for_each_membership(
    schema: pg_sys::Oid,
    user: pgrx::Uuid,
    mut f: impl FnMut(pg_sys::Datum, &str),
) {
    let probe = Probe {
        table: MEMBERS,
        index: MEMBERS_BY_USER,
        keys: &[Key::Uuid(user)],
        columns: &[c"organization_id", c"role"],
    };
    index_reads::scan(schema, &probe, |row| {
        if let (Some(org), Some(role)) = (row[0], index_reads::text(row[1])) {
            f(org, &role);
        }
    });
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::testing::claims_of;
    use pgrx::prelude::*;

    const OWNER: &str = "00000000-0000-0000-0000-0000000000e1";
    const MEMBER: &str = "00000000-0000-0000-0000-0000000000e2";

    fn org_ids() -> String {
        Spi::get_one::<String>(
            "SELECT coalesce(string_agg(o.name, ',' ORDER BY o.name), '')
             FROM organizations o WHERE o.id IN (SELECT current_user_org_ids())",
        )
        .unwrap()
        .unwrap()
    }

    /// Each statement sees the memberships its snapshot sees: one added or removed earlier in
    /// the transaction counts at once, as it did when a query read them.
    #[pg_test]
    fn memberships_follow_the_statement_snapshot() {
        Spi::run(&format!(
            "INSERT INTO auth.users (id, email) VALUES ('{OWNER}', 'e1@example.com'), ('{MEMBER}', 'e2@example.com');
             UPDATE organizations SET name = 'personal-' || u.email
             FROM users u WHERE u.id = organizations.owner_id"
        ))
        .unwrap();
        claims_of(OWNER);
        let team = Spi::get_one::<pgrx::Uuid>("SELECT create_organization('Team E', 'business')")
            .unwrap()
            .unwrap();
        Spi::run(&format!(
            "UPDATE org_subscriptions SET plan = 'business' WHERE organization_id = '{team}'"
        ))
        .unwrap();
        claims_of(MEMBER);
        assert_eq!(org_ids(), "personal-e2@example.com");
        Spi::run(&format!(
            "INSERT INTO organization_members (organization_id, user_id, role) VALUES ('{team}', '{MEMBER}', 'viewer')"
        ))
        .unwrap();
        assert_eq!(org_ids(), "Team E,personal-e2@example.com");
        let viewer_only =
            Spi::get_one::<i64>("SELECT count(*) FROM current_user_org_ids(ARRAY['viewer'])")
                .unwrap();
        assert_eq!(viewer_only, Some(1));
        Spi::run(&format!(
            "DELETE FROM organization_members WHERE organization_id = '{team}' AND user_id = '{MEMBER}'"
        ))
        .unwrap();
        assert_eq!(org_ids(), "personal-e2@example.com");
    }
}
