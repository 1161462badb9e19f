//! Organizations: personal and team workspaces and their members (sql/organizations.sql).
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::Uuid;

use crate::auth_context;
use crate::billing;
use crate::errors;
use crate::spi::{types, Expect, Statement};

pgrx::extension_sql_file!(
    "../sql/organizations.sql",
    name = "organizations",
    requires = ["identity", create_organization]
);

const SLUG_MAX: usize = 63;
const TEAM_ORG_TYPES: &[&str] = &["business", "family", "education", "other"];

/// Six random hex digits, to make a taken slug or username free.
pub fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..6].to_string()
}

/// A URL-safe slug from free text: lowercase ASCII letters and digits joined by single hyphens.
pub fn slugify(text: &str) -> String {
    let mut slug = String::new();
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    // Leave room for "-xxxxxx" so a suffixed slug still fits.
    let mut slug: String = slug.chars().take(SLUG_MAX - 7).collect();
    while slug.ends_with('-') {
        slug.pop();
    }
    if slug.len() < 3 {
        slug = if slug.is_empty() {
            "workspace".into()
        } else {
            format!("{slug}-workspace")
        };
    }
    slug
}

fn valid_slug(slug: &str) -> bool {
    (3..=SLUG_MAX).contains(&slug.len()) && slugify(slug) == slug
}

static PERSONAL_ORG: Statement = Statement::read(
    "SELECT id FROM organizations WHERE owner_id = $1 AND is_personal",
    &[types::UUID],
);

static INSERT_ORG: Statement = Statement::write(
    "INSERT INTO organizations (name, slug, owner_id, is_personal, org_type)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT DO NOTHING
     RETURNING id",
    &[
        types::TEXT,
        types::TEXT,
        types::UUID,
        types::BOOL,
        types::TEXT,
    ],
);

static INSERT_OWNER: Statement = Statement::write(
    "INSERT INTO organization_members (organization_id, user_id, role)
     VALUES ($1, $2, 'owner')
     ON CONFLICT (organization_id, user_id) DO NOTHING",
    &[types::UUID, types::UUID],
);

fn personal_org(client: &SpiClient<'_>, owner: Uuid) -> Option<Uuid> {
    client
        .select(PERSONAL_ORG.prepared(client), Some(1), &[owner.into()])
        .and_then(|t| {
            if t.is_empty() {
                Ok(None)
            } else {
                t.first().get_one::<Uuid>()
            }
        })
        .or_fail("organization lookup failed")
}

/// Inserts an organization under the first free slug among `slug`, then `slug-xxxxxx` variants.
/// `None` when a personal organization for `owner` appeared meanwhile (a concurrent signup).
fn insert_org(
    client: &mut SpiClient<'_>,
    owner: Uuid,
    name: &str,
    slug: &str,
    org_type: &str,
    only_exact_slug: bool,
) -> Option<Uuid> {
    let is_personal = org_type == "personal";
    let attempts = if only_exact_slug { 1 } else { 8 };
    for attempt in 0..attempts {
        let candidate = if attempt == 0 {
            slug.to_string()
        } else {
            format!("{slug}-{}", random_suffix())
        };
        let inserted = client
            .update(
                INSERT_ORG.prepared(client),
                None,
                &[
                    name.into(),
                    candidate.into(),
                    owner.into(),
                    is_personal.into(),
                    org_type.into(),
                ],
            )
            .and_then(|t| {
                if t.is_empty() {
                    Ok(None)
                } else {
                    t.first().get_one::<Uuid>()
                }
            })
            .or_fail("organization insert failed");
        if inserted.is_some() {
            return inserted;
        }
        if is_personal && personal_org(client, owner).is_some() {
            return None;
        }
    }
    errors::raise(
        pgrx::PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
        format!("organization slug \"{slug}\" is already taken"),
    )
}

/// Makes `org` owned by `owner` and on the free plan (both idempotent).
fn add_owner_and_free_plan(client: &mut SpiClient<'_>, org: Uuid, owner: Uuid) {
    client
        .update(
            INSERT_OWNER.prepared(client),
            None,
            &[org.into(), owner.into()],
        )
        .or_fail("owner membership insert failed");
    billing::start_free_subscription(client, org);
}

/// The user's personal organization, created with its owner membership and free
/// subscription if missing. Safe to run again and concurrently for the same user.
pub fn ensure_personal_org(
    client: &mut SpiClient<'_>,
    owner: Uuid,
    name: &str,
    handle: &str,
) -> Uuid {
    let org = match personal_org(client, owner) {
        Some(org) => org,
        None => {
            let name: String = name.chars().take(100).collect();
            insert_org(client, owner, &name, &slugify(handle), "personal", false)
                .or_else(|| personal_org(client, owner))
                .expect("a personal organization exists after a conflicting insert")
        }
    };
    add_owner_and_free_plan(client, org, owner);
    org
}

/// Creates a team organization (business, family, education or other) owned by the caller,
/// on the free plan. Without `slug`, one is derived from `name` and made unique; a given
/// `slug` that is taken is an error (23505). Returns the new organization's id.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn create_organization(
    name: Option<&str>,
    org_type: default!(Option<&str>, "'business'"),
    slug: default!(Option<&str>, "NULL"),
) -> Uuid {
    let name = errors::required(name, "name").trim();
    if name.is_empty() || name.chars().count() > 100 {
        errors::invalid_parameter("create_organization: name must be 1 to 100 characters");
    }
    let org_type = errors::required(org_type, "org_type");
    if !TEAM_ORG_TYPES.contains(&org_type) {
        errors::invalid_parameter(format!(
            "create_organization: org_type must be one of {}, not \"{org_type}\"",
            TEAM_ORG_TYPES.join(", ")
        ));
    }
    if let Some(s) = slug.filter(|s| !valid_slug(s)) {
        errors::invalid_parameter(format!(
            "create_organization: slug \"{s}\" must be 3 to 63 lowercase letters, digits and single hyphens"
        ));
    }
    Spi::connect_mut(|client| {
        let Some(owner) = auth_context::current_uid(client) else {
            errors::insufficient_privilege("create_organization: not authenticated")
        };
        let (base, exact) = match slug {
            Some(s) => (s.to_string(), true),
            None => (slugify(name), false),
        };
        let org = insert_org(client, owner, name, &base, org_type, exact)
            .expect("team organizations never conflict on the personal-owner index");
        add_owner_and_free_plan(client, org, owner);
        org
    })
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    use super::slugify;

    const OWNER: &str = "00000000-0000-0000-0000-0000000000c1";

    fn as_owner() {
        Spi::run(&format!(
            "INSERT INTO auth.users (id, email) VALUES ('{OWNER}', 'owner@example.com')"
        ))
        .unwrap();
        Spi::run("SET LOCAL ROLE authenticated").unwrap();
        Spi::run(&format!(
            "SELECT set_config('request.jwt.claims', '{{\"sub\":\"{OWNER}\"}}', true)"
        ))
        .unwrap();
    }

    #[pg_test]
    fn slugs() {
        assert_eq!(slugify("Acme, Inc."), "acme-inc");
        assert_eq!(slugify("  --Ünïcode--  "), "n-code");
        assert_eq!(slugify("x"), "x-workspace");
        assert_eq!(slugify("!!!"), "workspace");
        assert!(slugify(&"long ".repeat(40)).len() <= 56);
    }

    #[pg_test]
    fn team_org_gets_owner_membership_and_free_plan() {
        as_owner();
        let org =
            Spi::get_one::<pgrx::Uuid>("SELECT create_organization('Acme Labs', 'education')")
                .unwrap()
                .unwrap();
        Spi::run("RESET ROLE").unwrap();
        let row = Spi::get_one::<String>(&format!(
            "SELECT o.slug || '/' || o.org_type || '/' || m.role || '/' || s.plan
             FROM organizations o
             JOIN organization_members m ON m.organization_id = o.id AND m.user_id = o.owner_id
             JOIN org_subscriptions s ON s.organization_id = o.id
             WHERE o.id = '{org}' AND NOT o.is_personal"
        ))
        .unwrap();
        assert_eq!(row.as_deref(), Some("acme-labs/education/owner/free"));
    }

    #[pg_test]
    fn derived_slugs_do_not_collide() {
        as_owner();
        Spi::run("SELECT create_organization('Same Name')").unwrap();
        Spi::run("SELECT create_organization('Same Name')").unwrap();
        Spi::run("RESET ROLE").unwrap();
        assert_eq!(
            Spi::get_one::<i64>(
                "SELECT count(DISTINCT slug) FROM organizations WHERE name = 'Same Name'"
            )
            .unwrap(),
            Some(2)
        );
    }

    #[pg_test(error = "organization slug \"taken-slug\" is already taken")]
    fn explicit_taken_slug_is_a_unique_violation() {
        as_owner();
        Spi::run("SELECT create_organization('One', 'business', 'taken-slug')").unwrap();
        Spi::run("SELECT create_organization('Two', 'business', 'taken-slug')").unwrap();
    }

    #[pg_test(
        error = "create_organization: org_type must be one of business, family, education, other, not \"personal\""
    )]
    fn personal_is_not_a_team_type() {
        as_owner();
        Spi::run("SELECT create_organization('Mine', 'personal')").unwrap();
    }

    #[pg_test(error = "create_organization: not authenticated")]
    fn anonymous_callers_cannot_create() {
        Spi::run("SELECT create_organization('Nobody''s')").unwrap();
    }
}
