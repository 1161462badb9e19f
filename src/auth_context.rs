//! Who is calling: the Supabase user (`auth.uid()`) and whether the caller acts as the service role.
use std::cell::{Cell, RefCell};
use std::ffi::CStr;

use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::errors;
use crate::function_memo;
use crate::spi::{Expect, Statement};

static CURRENT_UID: Statement = Statement::read("SELECT auth.uid()", &[]);

/// `auth.uid()`, whichever definition the database has (Supabase's or saas_core's).
pub fn current_uid(client: &SpiClient<'_>) -> Option<pgrx::Uuid> {
    uid_from_cache().unwrap_or_else(|| {
        let generation = function_memo::generation();
        let uid = client
            .select(CURRENT_UID.prepared(client), Some(1), &[])
            .and_then(|t| t.first().get_one::<pgrx::Uuid>())
            .or_fail("auth.uid() failed");
        // Kept only if no change to pg_proc arrived while it was asked.
        if function_memo::generation() == generation {
            remember_uid(generation, uid);
        }
        uid
    })
}

/// `current_uid`, connecting to SPI only when the answer is not known already.
pub fn current_uid_connecting() -> Option<pgrx::Uuid> {
    uid_from_cache().unwrap_or_else(|| Spi::connect(current_uid))
}

/// The settings `auth.uid()` reads (Supabase's definition and saas_core's alike): the answer
/// is remembered for the values they had, so a backend asks again only when a request brings
/// another JWT. Any change to pg_proc (a new definition of auth.uid()) forgets it.
const UID_SETTINGS: [&CStr; 2] = [c"request.jwt.claim.sub", c"request.jwt.claims"];

type UidKey = [Option<Vec<u8>>; 2];

thread_local! {
    // The pg_proc generation, the settings' values and auth.uid()'s answer for them.
    static UID_CACHE: RefCell<Option<(u64, UidKey, Option<pgrx::Uuid>)>> = const { RefCell::new(None) };
}

/// A setting's current value, borrowed from PostgreSQL until it next changes.
fn raw_setting(name: &CStr) -> Option<&'static [u8]> {
    // SAFETY: GetConfigOption returns NULL or the setting's NUL-terminated value, which stays
    // valid until the setting changes; it is compared or copied at once.
    unsafe {
        let value = pg_sys::GetConfigOption(name.as_ptr(), true, false);
        (!value.is_null()).then(|| CStr::from_ptr(value).to_bytes())
    }
}

fn uid_from_cache() -> Option<Option<pgrx::Uuid>> {
    let generation = function_memo::generation();
    UID_CACHE.with(|cache| {
        let cache = cache.borrow();
        let (at, key, uid) = cache.as_ref()?;
        (*at == generation
            && UID_SETTINGS
                .iter()
                .zip(key)
                .all(|(name, kept)| raw_setting(name) == kept.as_deref()))
        .then_some(*uid)
    })
}

fn remember_uid(generation: u64, uid: Option<pgrx::Uuid>) {
    let key = UID_SETTINGS.map(|name| raw_setting(name).map(<[u8]>::to_vec));
    UID_CACHE.with(|cache| *cache.borrow_mut() = Some((generation, key, uid)));
}

thread_local! {
    static SERVICE_ROLE_OID: Cell<Option<pg_sys::Oid>> = const { Cell::new(None) };
}

/// True when the role the request runs as (PostgREST's `SET LOCAL ROLE`, not the owner of a
/// SECURITY DEFINER function) has the privileges of `service_role`; superusers do.
///
/// The JWT `role` claim alone never counts: any session can set `request.jwt.claims`, while
/// only a member of service_role can `SET ROLE service_role`.
pub fn caller_is_service_role() -> bool {
    // SAFETY: plain catalog lookups on the backend's own state.
    unsafe { has_service_role_privileges(pg_sys::GetOuterUserId()) }
}

unsafe fn has_service_role_privileges(role: pg_sys::Oid) -> bool {
    // SAFETY: the caller passes a role of this backend; lookups go through the syscache.
    unsafe {
        if pg_sys::superuser_arg(role) {
            return true;
        }
        let service_role = SERVICE_ROLE_OID.with(|cached| match cached.get() {
            Some(oid) => oid,
            None => {
                let name: &CStr = c"service_role";
                let oid = pg_sys::get_role_oid(name.as_ptr(), true);
                if oid != pg_sys::InvalidOid {
                    cached.set(Some(oid));
                }
                oid
            }
        });
        service_role != pg_sys::InvalidOid && pg_sys::has_privs_of_role(role, service_role)
    }
}

/// True when the *current* role (inside a SECURITY DEFINER function, its owner) has the
/// privileges of `service_role`; superusers do. Direct writers are judged by it.
pub fn current_role_is_service_role() -> bool {
    // SAFETY: plain catalog lookups on the backend's own state.
    unsafe { has_service_role_privileges(pg_sys::GetUserId()) }
}

/// The name of the role the request runs as (PostgREST's `SET LOCAL ROLE`, a DBA's login),
/// not the owner of a SECURITY DEFINER function.
pub fn outer_role_name() -> String {
    // SAFETY: a syscache lookup of the backend's own outer role; NULL when it is gone.
    unsafe {
        let name = pg_sys::GetUserNameFromId(pg_sys::GetOuterUserId(), true);
        if name.is_null() {
            return "unknown".into();
        }
        CStr::from_ptr(name).to_string_lossy().into_owned()
    }
}

/// A configuration setting (a GUC such as PostgREST's `request.headers`), if set and not empty.
pub fn setting(name: &str) -> Option<String> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: reads the setting's current value; missing_ok avoids an error for unknown names.
    let value = unsafe { pg_sys::GetConfigOption(name.as_ptr(), true, false) };
    if value.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated string owned by the GUC machinery, copied at once.
    let value = unsafe { CStr::from_ptr(value) }
        .to_string_lossy()
        .into_owned();
    (!value.is_empty()).then_some(value)
}

/// Lets the service role act for anyone, and anybody else only for themself.
pub fn require_self_or_service(client: &SpiClient<'_>, user_id: pgrx::Uuid, action: &str) {
    if caller_is_service_role() {
        return;
    }
    check_self_or_service(current_uid(client), user_id, action)
}

/// As `require_self_or_service`, with `auth.uid()` already read (`caller`).
pub fn check_self_or_service(caller: Option<pgrx::Uuid>, user_id: pgrx::Uuid, action: &str) {
    if caller_is_service_role() {
        return;
    }
    match caller {
        Some(uid) if uid == user_id => {}
        Some(_) => {
            errors::insufficient_privilege(format!("{action}: a user may only act for themself"))
        }
        None => errors::insufficient_privilege(format!("{action}: not authenticated")),
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn uid_reads_claims_and_legacy_claim() {
        Spi::run("SELECT set_config('request.jwt.claims', '{\"sub\":\"00000000-0000-0000-0000-000000000001\",\"role\":\"authenticated\"}', true)").unwrap();
        assert_eq!(
            Spi::get_one::<String>("SELECT auth.uid()::text")
                .unwrap()
                .as_deref(),
            Some("00000000-0000-0000-0000-000000000001")
        );
        assert_eq!(
            Spi::get_one::<String>("SELECT auth.role()")
                .unwrap()
                .as_deref(),
            Some("authenticated")
        );
        // '' counts as unset, so the JSON claims still answer.
        Spi::run("SELECT set_config('request.jwt.claim.sub', '', true)").unwrap();
        assert_eq!(
            Spi::get_one::<String>("SELECT auth.uid()::text")
                .unwrap()
                .as_deref(),
            Some("00000000-0000-0000-0000-000000000001")
        );
        Spi::run("SELECT set_config('request.jwt.claims', '', true)").unwrap();
        assert_eq!(
            Spi::get_one::<pgrx::Uuid>("SELECT auth.uid()").unwrap(),
            None
        );
        Spi::run("SELECT set_config('request.jwt.claim.sub', '00000000-0000-0000-0000-000000000002', true)").unwrap();
        assert_eq!(
            Spi::get_one::<String>("SELECT auth.uid()::text")
                .unwrap()
                .as_deref(),
            Some("00000000-0000-0000-0000-000000000002")
        );
    }

    #[pg_test]
    fn superuser_counts_as_service_role_but_authenticated_does_not() {
        assert!(crate::auth_context::caller_is_service_role());
        Spi::run("SET LOCAL ROLE authenticated").unwrap();
        assert!(!crate::auth_context::caller_is_service_role());
        // A forged role claim grants nothing.
        Spi::run("SELECT set_config('request.jwt.claims', '{\"role\":\"service_role\"}', true)")
            .unwrap();
        assert!(!crate::auth_context::caller_is_service_role());
        Spi::run("RESET ROLE").unwrap();
        Spi::run("SET LOCAL ROLE service_role").unwrap();
        assert!(crate::auth_context::caller_is_service_role());
    }
}
