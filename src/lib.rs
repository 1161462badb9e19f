//! saas_core: the core data layer of a SaaS application as one PostgreSQL extension.
//!
//! Each domain module owns its SQL file (tables, policies, grants), its functions and its
//! tests. The SQL files are ordered by explicit `requires`:
//!
//! `auth` → `identity` → `organizations` → `billing` → `entitlements` → `metering` → migration.
mod auth_context;
mod billing;
mod entitlements;
mod errors;
mod identity;
mod metering;
mod organizations;
mod plan_catalog;
mod spi;
mod timestamps;

::pgrx::pg_module_magic!(name, version);

pgrx::extension_sql_file!("../sql/auth.sql", name = "auth", bootstrap);

// Users that existed in auth.users before the extension: provisioned last, once every table exists.
pgrx::extension_sql_file!(
    "../sql/migrate_existing_users.sql",
    name = "migrate_existing_users",
    finalize
);

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
