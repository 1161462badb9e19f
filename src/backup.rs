//! Backups: what saas_core does so that `pg_dump` + `pg_restore` (or `pg_dump | psql`)
//! reproduce a database exactly.
//!
//! * A restore loads rows that already went through saas_core's triggers once. Every trigger
//!   that creates or derives rows (signup provisioning, member counts and seats, usage rollups,
//!   catalog seeding) asks `restore_in_progress()` and leaves restored rows as they are.
//! * pg_dump emits `CREATE EXTENSION` early; the extension needs `auth.users` and
//!   `auth.uid()`, which on plain PostgreSQL are ordinary objects in the dump. The extension
//!   records a dependency on them so that pg_dump creates them first.
use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::errors;

pgrx::extension_sql_file!(
    "../sql/backup.sql",
    name = "backup",
    requires = ["auth", restore_in_progress_sql, record_auth_dependencies]
);

/// True while a dump is being loaded in this session. pg_dump's output and pg_restore always
/// set `check_function_bodies = off` and `row_security = off` (PostgreSQL documents the first as
/// what to set "before loading functions on behalf of other users"); Supabase's data-only
/// restores run with `session_replication_role = replica`. Applications set none of these.
pub fn restore_in_progress() -> bool {
    // SAFETY: plain reads of the backend's GUC variables.
    unsafe {
        (!pg_sys::check_function_bodies && !pg_sys::row_security)
            || pg_sys::SessionReplicationRole == pg_sys::SESSION_REPLICATION_ROLE_REPLICA as i32
    }
}

/// `restore_in_progress()` for the SQL triggers.
#[pg_extern(volatile, parallel_safe, name = "restore_in_progress")]
fn restore_in_progress_sql() -> bool {
    restore_in_progress()
}

/// Records that the extension depends on `auth.users` and `auth.uid()`, so that pg_dump
/// creates them before `CREATE EXTENSION saas_core`, and so that dropping either says that
/// saas_core needs it. The install and update scripts call it; so does the extension's owner
/// after `pg_upgrade`, which re-creates the extension without these dependencies. Idempotent.
#[pg_extern(volatile)]
fn record_auth_dependencies() {
    // SAFETY: catalog lookups and the dependency API, on the backend's own state.
    unsafe {
        let name: &CStr = c"saas_core";
        let extension = pg_sys::get_extension_oid(name.as_ptr(), true);
        let in_own_script =
            pg_sys::creating_extension && pg_sys::CurrentExtensionObject == extension;
        let owner = Spi::get_one_with_args::<pg_sys::Oid>(
            "SELECT extowner FROM pg_catalog.pg_extension WHERE oid = $1",
            &[extension.into()],
        )
        .ok()
        .flatten()
        .unwrap_or(pg_sys::InvalidOid);
        if extension == pg_sys::InvalidOid
            || !(in_own_script || pg_sys::has_privs_of_role(pg_sys::GetUserId(), owner))
        {
            errors::insufficient_privilege(
                "record_auth_dependencies: only the extension's owner may record its dependencies",
            );
        }
        let depender = pg_sys::ObjectAddress {
            classId: pg_sys::ExtensionRelationId,
            objectId: extension,
            objectSubId: 0,
        };
        let users = Spi::get_one::<pg_sys::Oid>("SELECT 'auth.users'::pg_catalog.regclass::oid")
            .ok()
            .flatten();
        let uid = Spi::get_one::<pg_sys::Oid>("SELECT 'auth.uid()'::pg_catalog.regprocedure::oid")
            .ok()
            .flatten();
        let (Some(users), Some(uid)) = (users, uid) else {
            errors::internal(
                "recording the extension's dependencies",
                "auth objects missing",
            )
        };
        for (class, object) in [
            (pg_sys::RelationRelationId, users),
            (pg_sys::ProcedureRelationId, uid),
        ] {
            let referenced = pg_sys::ObjectAddress {
                classId: class,
                objectId: object,
                objectSubId: 0,
            };
            // Idempotent: an update script may run this again.
            if !depends_on(extension, class, object) {
                pg_sys::recordDependencyOn(
                    &depender,
                    &referenced,
                    pg_sys::DependencyType::DEPENDENCY_NORMAL,
                );
            }
        }
    }
}

fn depends_on(extension: pg_sys::Oid, class: pg_sys::Oid, object: pg_sys::Oid) -> bool {
    Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_depend
                        WHERE classid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND objid = $1
                          AND refclassid = $2 AND refobjid = $3 AND deptype = 'n')",
        &[extension.into(), class.into(), object.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn a_session_set_up_like_pg_restore_counts_as_a_restore() {
        assert!(!crate::backup::restore_in_progress());
        Spi::run("SET LOCAL check_function_bodies = off").unwrap();
        // check_function_bodies alone is what some migration tools set: not a restore.
        assert!(!crate::backup::restore_in_progress());
        Spi::run("SET LOCAL row_security = off").unwrap();
        assert!(crate::backup::restore_in_progress());
        Spi::run("RESET check_function_bodies").unwrap();
        Spi::run("RESET row_security").unwrap();
        Spi::run("SET LOCAL session_replication_role = replica").unwrap();
        assert!(crate::backup::restore_in_progress());
    }

    #[pg_test(
        error = "record_auth_dependencies: only the extension's owner may record its dependencies"
    )]
    fn dependencies_are_recorded_only_by_the_owner() {
        Spi::run("GRANT EXECUTE ON FUNCTION record_auth_dependencies() TO service_role").unwrap();
        Spi::run("SET LOCAL ROLE service_role").unwrap();
        Spi::run("SELECT record_auth_dependencies()").unwrap();
    }

    #[pg_test]
    fn recording_again_adds_nothing() {
        Spi::run("SELECT record_auth_dependencies()").unwrap();
        Spi::run("SELECT record_auth_dependencies()").unwrap();
        let n = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_depend WHERE classid = 'pg_extension'::regclass
               AND objid = (SELECT oid FROM pg_extension WHERE extname = 'saas_core')
               AND refobjid = 'auth.users'::regclass",
        )
        .unwrap();
        assert_eq!(n, Some(1));
    }

    #[pg_test]
    fn the_extension_depends_on_auth_users_and_uid() {
        let n = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_depend d JOIN pg_extension e ON e.oid = d.objid
             WHERE d.classid = 'pg_extension'::regclass AND e.extname = 'saas_core'
               AND d.deptype = 'n'
               AND (d.refobjid = 'auth.users'::regclass OR d.refobjid = 'auth.uid()'::regprocedure)",
        )
        .unwrap();
        assert_eq!(n, Some(2));
    }
}
