//! saas_core: the core data layer of a SaaS application as one PostgreSQL extension.
//!
//! Each domain module owns its SQL file (tables, policies, grants), its functions and its
//! tests. The SQL files are ordered by explicit `requires`:
//!
//! `auth` → `backup` → `identity` → `organizations` → `billing` → `entitlements` →
//! `metering` → `retention` → `recording` → `provisioning`; `organizations` → `roles` →
//! `members` (needs `entitlements`) → `teams` → `invitations` → `audit` (needs `billing`) →
//! `notifications`; `billing` + `entitlements` → `billing_events`; `billing` + `roles` →
//! `billing_ledger`, `coupons`, `usage_records` (needs `metering`); `finalize` last.
mod audit;
mod auth_context;
mod backup;
mod billing;
mod billing_events;
mod billing_ledger;
mod caller_organizations;
mod counting;
mod coupons;
mod entitlements;
mod errors;
mod function_memo;
mod identity;
mod index_reads;
mod invitations;
mod jsonb;
mod legacy_v0_1;
mod members;
mod metering;
mod meters;
mod names;
mod notifications;
mod organizations;
mod plan_catalog;
mod provisioning;
mod quota;
mod recording;
mod retention;
mod roles;
mod spi;
mod teams;
mod timestamps;
mod tuples;
mod usage_records;

::pgrx::pg_module_magic!(name, version);

/// Runs when a backend loads the library: keeps Rust internals out of error reports.
#[pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    errors::install_panic_hook();
}

pgrx::extension_sql_file!("../sql/auth.sql", name = "auth", bootstrap);

// Existing accounts are provisioned, and objects handed to the installing role, last.
pgrx::extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[cfg(any(test, feature = "pg_test"))]
mod testing;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
