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
/// to the active snapshot, through the index on `(user_id, organization_id, role)`.
///
/// # Safety
/// Inside a transaction; `f` must copy the datum it keeps (it points into a pinned buffer).
unsafe fn for_each_membership(
    schema: pg_sys::Oid,
    user: pgrx::Uuid,
    mut f: impl FnMut(pg_sys::Datum, &str),
) {
    unsafe {
        let table_oid = pg_sys::get_relname_relid(MEMBERS.as_ptr(), schema);
        let index_oid = pg_sys::get_relname_relid(MEMBERS_BY_USER.as_ptr(), schema);
        if table_oid == pg_sys::InvalidOid || index_oid == pg_sys::InvalidOid {
            errors::internal(
                "reading the caller's memberships",
                "organization_members or its index on user_id is missing",
            );
        }
        let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
        let table = pg_sys::table_open(table_oid, lock);
        let index = pg_sys::index_open(index_oid, lock);
        let org_attnum = pg_sys::get_attnum(table_oid, c"organization_id".as_ptr());
        let role_attnum = pg_sys::get_attnum(table_oid, c"role".as_ptr());
        if org_attnum <= 0 || role_attnum <= 0 {
            errors::internal(
                "reading the caller's memberships",
                "organization_members has no organization_id or role",
            );
        }
        // The statement's snapshot, as a STABLE function's query would use.
        let pushed = !pg_sys::ActiveSnapshotSet();
        if pushed {
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        }
        let user_bytes = pg_sys::palloc(16) as *mut u8;
        std::ptr::copy_nonoverlapping(user.as_bytes().as_ptr(), user_bytes, 16);
        let mut key: pg_sys::ScanKeyData = std::mem::zeroed();
        pg_sys::ScanKeyInit(
            &mut key,
            1,
            pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
            pg_sys::Oid::from(pg_sys::F_UUID_EQ),
            pg_sys::Datum::from(user_bytes),
        );
        let scan = pg_sys::index_beginscan(table, index, pg_sys::GetActiveSnapshot(), 1, 0);
        pg_sys::index_rescan(scan, &mut key, 1, std::ptr::null_mut(), 0);
        let slot = pg_sys::table_slot_create(table, std::ptr::null_mut());
        let wanted = org_attnum.max(role_attnum);
        while pg_sys::index_getnext_slot(scan, pg_sys::ScanDirection::ForwardScanDirection, slot) {
            if ((*slot).tts_nvalid as i32) < wanted as i32 {
                pg_sys::slot_getsomeattrs_int(slot, wanted as i32);
            }
            let values = (*slot).tts_values;
            let nulls = (*slot).tts_isnull;
            let org_i = (org_attnum - 1) as usize;
            let role_i = (role_attnum - 1) as usize;
            if *nulls.add(org_i) || *nulls.add(role_i) {
                continue;
            }
            let role = pg_sys::text_to_cstring(values.add(role_i).read().cast_mut_ptr());
            f(
                values.add(org_i).read(),
                CStr::from_ptr(role).to_str().unwrap_or(""),
            );
            pg_sys::pfree(role.cast());
        }
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        pg_sys::index_endscan(scan);
        if pushed {
            pg_sys::PopActiveSnapshot();
        }
        // The locks stay until the transaction ends, as a query's would.
        pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
        pg_sys::table_close(table, pg_sys::NoLock as pg_sys::LOCKMODE);
    }
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
