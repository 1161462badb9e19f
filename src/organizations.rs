//! Organizations: personal and team workspaces, their members, and who owns them
//! (sql/organizations.sql).
//!
//! Ownership: `owner_id` is always a member with the role `owner`. It changes hands through
//! `transfer_ownership`, or, when the owner's account goes, to the longest-standing member of
//! the highest role (owner, admin, member, viewer). A team with nobody left goes with its
//! owner; a personal organization always goes with its user.
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::Uuid;

use crate::auth_context;
use crate::backup;
use crate::billing;
use crate::billing_events;
use crate::entitlements;
use crate::errors;
use crate::identity;
#[allow(unused_imports)] // named in `requires` below
use crate::names::is_valid_slug;
use crate::names::{self, Refusal};
use crate::roles::Access;
use crate::spi::{self, types, Expect, Statement};

pgrx::extension_sql_file!(
    "../sql/organizations.sql",
    name = "organizations",
    requires = [
        "identity",
        is_valid_slug,
        create_team_organization,
        transfer_ownership,
        check_organization,
        track_membership,
        protect_owner_membership,
        hand_over_organizations,
    ]
);

const TEAM_ORG_TYPES: &[&str] = &["business", "family", "education", "other"];

static PERSONAL_ORG: Statement = Statement::read(
    "SELECT id FROM organizations WHERE owner_id = $1 AND is_personal",
    &[types::UUID],
);

static SLUG_TAKEN: Statement = Statement::read(
    "SELECT EXISTS (SELECT 1 FROM organizations WHERE slug = $1 AND id IS DISTINCT FROM $2)",
    &[types::TEXT, types::UUID],
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
    spi::one::<Uuid>(
        client,
        &PERSONAL_ORG,
        &[owner.into()],
        "looking up the personal organization",
    )
}

fn slug_taken(client: &SpiClient<'_>, slug: &str, org: Option<Uuid>) -> bool {
    spi::one::<bool>(
        client,
        &SLUG_TAKEN,
        &[slug.into(), org.into()],
        "looking up a slug",
    )
    .unwrap_or(false)
}

/// Inserts an organization under the first free slug among `slug`, then `slug-xxxxxx`
/// variants (an exact slug is tried alone). `None` when a personal organization for `owner`
/// appeared meanwhile (a concurrent signup).
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
            format!("{slug}-{}", names::random_suffix())
        };
        if !only_exact_slug
            && (names::check_new_slug(&candidate).is_err() || slug_taken(client, &candidate, None))
        {
            continue;
        }
        let inserted = spi::one_mut::<Uuid>(
            client,
            &INSERT_ORG,
            &[
                name.into(),
                candidate.into(),
                owner.into(),
                is_personal.into(),
                org_type.into(),
            ],
            "creating the organization",
        );
        if inserted.is_some() {
            return inserted;
        }
        if is_personal && personal_org(client, owner).is_some() {
            return None;
        }
    }
    errors::unique_violation(format!("organization slug \"{slug}\" is already taken"))
}

/// Makes `org` owned by `owner` and on the free plan (both idempotent).
fn add_owner_and_free_plan(client: &mut SpiClient<'_>, org: Uuid, owner: Uuid) {
    spi::run(
        client,
        &INSERT_OWNER,
        &[org.into(), owner.into()],
        "adding the owner",
    );
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
            match insert_org(
                client,
                owner,
                &name,
                &names::slugify(handle),
                "personal",
                false,
            )
            .or_else(|| personal_org(client, owner))
            {
                Some(org) => org,
                None => errors::internal(
                    "creating the personal organization",
                    "no personal organization after a conflicting insert",
                ),
            }
        }
    };
    add_owner_and_free_plan(client, org, owner);
    org
}

/// What a caller of `create_organization` asked for, checked.
pub struct NewTeam<'a> {
    name: &'a str,
    org_type: &'a str,
    slug: Option<&'a str>,
}

impl<'a> NewTeam<'a> {
    pub fn parse(name: Option<&'a str>, org_type: Option<&'a str>, slug: Option<&'a str>) -> Self {
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
        if let Some(s) = slug {
            refuse_bad_slug(s, "create_organization: ");
        }
        NewTeam {
            name,
            org_type,
            slug,
        }
    }

    /// Creates the team owned by `owner` on the free plan; returns its id.
    pub fn create(&self, client: &mut SpiClient<'_>, owner: Uuid) -> Uuid {
        let (base, exact) = match self.slug {
            Some(s) => (s.to_string(), true),
            None => (names::slugify(self.name), false),
        };
        let Some(org) = insert_org(client, owner, self.name, &base, self.org_type, exact) else {
            errors::internal(
                "creating the organization",
                "a team organization conflicted on the personal-owner index",
            )
        };
        add_owner_and_free_plan(client, org, owner);
        org
    }
}

fn refuse_bad_slug(slug: &str, context: &str) {
    match names::check_new_slug(slug) {
        Err(Refusal::Malformed) => errors::invalid_parameter(format!(
            "{context}slug \"{slug}\" is not valid: use {}",
            names::SLUG_RULE
        )),
        Err(Refusal::Reserved) => {
            errors::invalid_parameter(format!("{context}slug \"{slug}\" is reserved"))
        }
        Ok(()) => {}
    }
}

/// Creates a team organization (business, family, education or other) owned by the caller,
/// on the free plan. Without `slug`, one is derived from `name` and made unique; a given
/// `slug` that is taken is an error (23505). Anonymous users need a permanent account first.
#[pg_extern(volatile, security_definer, name = "create_organization")]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn create_team_organization(
    name: Option<&str>,
    org_type: default!(Option<&str>, "'business'"),
    slug: default!(Option<&str>, "NULL"),
) -> Uuid {
    let team = NewTeam::parse(name, org_type, slug);
    Spi::connect_mut(|client| {
        let Some(owner) = auth_context::current_uid(client) else {
            errors::insufficient_privilege("create_organization: not authenticated")
        };
        if identity::is_anonymous(client, owner) {
            errors::insufficient_privilege(
                "create_organization: anonymous users need a permanent account to create organizations",
            );
        }
        team.create(client, owner)
    })
}

/// `check_organization`: BEFORE INSERT OR UPDATE OF slug ON organizations. A slug being chosen
/// follows the rule and is not reserved or taken, with errors that say which.
#[pg_trigger]
fn check_organization<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::datum::TryFromDatumError> {
    let Some(new) = trigger.new() else {
        errors::invalid_parameter(
            "check_organization() must be a row-level INSERT or UPDATE trigger",
        )
    };
    if backup::restore_in_progress() {
        return Ok(Some(new));
    }
    let slug: Option<String> = new.get_by_name("slug")?;
    let id: Option<Uuid> = new.get_by_name("id")?;
    let changed = match trigger.old() {
        Some(old) => old.get_by_name::<String>("slug")? != slug,
        None => true,
    };
    if let (Some(slug), true) = (slug.as_deref(), changed) {
        refuse_bad_slug(slug, "organization ");
        if Spi::connect(|client| slug_taken(client, slug, id)) {
            errors::unique_violation(format!("organization slug \"{slug}\" is already taken"));
        }
    }
    Ok(Some(new))
}

static COUNT_MEMBER: Statement = Statement::write(
    "UPDATE organizations o SET member_count = o.member_count + $2
     WHERE o.id = $1
     RETURNING o.member_count,
               coalesce((SELECT plan_in_effect(s.plan, s.status) FROM org_subscriptions s
                         WHERE s.organization_id = o.id), 'free'),
               (SELECT s.seats FROM org_subscriptions s
                WHERE s.organization_id = o.id AND s.billing_type = 'quantity_based'
                  AND plan_in_effect(s.plan, s.status) <> 'free')",
    &[types::UUID, types::INT8],
);

/// What counting a member found: the new count, the plan in effect, and the purchased seats
/// of a quantity-based subscription (which bound membership too).
pub struct Seats {
    pub members: i64,
    pub plan: String,
    pub purchased: Option<i64>,
}

static ANONYMOUS_IN_TEAM: Statement = Statement::read(
    "SELECT u.is_anonymous AND NOT o.is_personal
     FROM users u, organizations o WHERE u.id = $1 AND o.id = $2",
    &[types::UUID, types::UUID],
);

/// `track_membership`: AFTER INSERT OR DELETE OR UPDATE OF organization_id, user_id ON
/// organization_members. Keeps `organizations.member_count` exact and holds the plan's seat
/// limit. Counting is an UPDATE of the organization row, so two additions at the limit
/// conflict under every isolation level: READ COMMITTED waits and recounts, REPEATABLE READ
/// and SERIALIZABLE fail the second with 40001. Runs after row level security, so a
/// non-member learns nothing about another organization's seats.
#[pg_trigger]
fn track_membership<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::datum::TryFromDatumError> {
    if backup::restore_in_progress() {
        return Ok(None);
    }
    let before = membership(trigger.old())?;
    let after = membership(trigger.new())?;
    Spi::connect_mut(|client| {
        let moved = before.map(|(org, _)| org) != after.map(|(org, _)| org);
        if let (Some((org, _)), true) = (before, moved) {
            let seats = count_member(client, org, -1);
            billing_events::queue_seats_after_removal(client, org, &seats);
        }
        if let Some((org, user)) = after {
            if before.map(|(_, u)| u) != Some(user) {
                refuse_anonymous_in_teams(client, user, org);
            }
            if moved {
                let seats = count_member(client, org, 1);
                entitlements::enforce_seat_limit(client, &seats);
            }
        }
    });
    Ok(None)
}

fn membership(
    row: Option<PgHeapTuple<'_, AllocatedByPostgres>>,
) -> Result<Option<(Uuid, Uuid)>, pgrx::datum::TryFromDatumError> {
    let Some(row) = row else { return Ok(None) };
    Ok(Some((
        errors::required(
            row.get_by_name::<Uuid>("organization_id")?,
            "organization_id",
        ),
        errors::required(row.get_by_name::<Uuid>("user_id")?, "user_id"),
    )))
}

/// Adds `delta` to the member count; returns the new count, the plan in effect and the
/// purchased seats of a quantity-based subscription.
fn count_member(client: &mut SpiClient<'_>, org: Uuid, delta: i64) -> Seats {
    let what = "counting members";
    let table = client
        .update(
            COUNT_MEMBER.prepared(client),
            None,
            &[org.into(), delta.into()],
        )
        .or_fail(what);
    if table.is_empty() {
        // The organization itself is being deleted.
        return Seats {
            members: 0,
            plan: "free".into(),
            purchased: None,
        };
    }
    let row = table.first();
    Seats {
        members: row.get::<i32>(1).or_fail(what).unwrap_or(0) as i64,
        plan: row
            .get::<String>(2)
            .or_fail(what)
            .unwrap_or_else(|| "free".into()),
        purchased: row.get::<i32>(3).or_fail(what).map(i64::from),
    }
}

fn refuse_anonymous_in_teams(client: &SpiClient<'_>, user: Uuid, org: Uuid) {
    if spi::one::<bool>(
        client,
        &ANONYMOUS_IN_TEAM,
        &[user.into(), org.into()],
        "reading the member",
    )
    .unwrap_or(false)
    {
        errors::insufficient_privilege(
            "anonymous users cannot join team organizations: they need a permanent account first",
        );
    }
}

static ORG_OWNER: Statement = Statement::read(
    "SELECT o.owner_id FROM organizations o WHERE o.id = $1",
    &[types::UUID],
);

static ACCOUNT_REMAINS: Statement = Statement::read(
    "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)",
    &[types::UUID],
);

/// `protect_owner_membership`: BEFORE DELETE OR UPDATE ON organization_members. The owner's
/// membership stays, with the role `owner`, as long as the organization and the owner's
/// account do: ownership moves with `transfer_ownership`, never by removing the owner.
#[pg_trigger]
fn protect_owner_membership<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::datum::TryFromDatumError> {
    let Some(old) = trigger.old() else {
        errors::invalid_parameter(
            "protect_owner_membership() must be a row-level DELETE or UPDATE trigger",
        )
    };
    let org: Uuid = errors::required(old.get_by_name("organization_id")?, "organization_id");
    let user: Uuid = errors::required(old.get_by_name("user_id")?, "user_id");
    let new = trigger.new();
    let keeps_ownership = match &new {
        Some(new) => {
            new.get_by_name::<Uuid>("organization_id")? == Some(org)
                && new.get_by_name::<Uuid>("user_id")? == Some(user)
                && new.get_by_name::<String>("role")?.as_deref() == Some("owner")
        }
        None => false,
    };
    if !keeps_ownership {
        Spi::connect(|client| {
            let owner = spi::one::<Uuid>(client, &ORG_OWNER, &[org.into()], "reading the owner");
            let account_remains = spi::one::<bool>(
                client,
                &ACCOUNT_REMAINS,
                &[user.into()],
                "reading the owner",
            )
            .unwrap_or(false);
            if owner == Some(user) && account_remains {
                errors::not_in_prerequisite_state(
                    "the organization's owner must stay a member with the role owner",
                    "Transfer ownership first: SELECT transfer_ownership(org_id, new_owner).",
                );
            }
        });
    }
    Ok(match new {
        Some(new) => Some(new),
        None => Some(old),
    })
}

static TEAMS_AND_SUCCESSORS: Statement = Statement::write(
    "SELECT o.id,
            (SELECT m.user_id
             FROM organization_members m
             JOIN users u ON u.id = m.user_id
             WHERE m.organization_id = o.id AND m.user_id <> $1
               AND u.deleted_at IS NULL AND NOT u.is_anonymous
             ORDER BY array_position(ARRAY['owner', 'admin', 'member', 'viewer'], m.role),
                      m.created_at, m.user_id
             LIMIT 1)
     FROM organizations o
     WHERE o.owner_id = $1 AND NOT o.is_personal
     ORDER BY o.id
     FOR UPDATE OF o",
    &[types::UUID],
);

static SET_OWNER: Statement = Statement::write(
    "UPDATE organizations SET owner_id = $2 WHERE id = $1",
    &[types::UUID, types::UUID],
);

static SET_ROLE: Statement = Statement::write(
    "UPDATE organization_members SET role = $3 WHERE organization_id = $1 AND user_id = $2",
    &[types::UUID, types::UUID, types::TEXT],
);

/// Passes every team `user` owns to its successor. Teams without one stay with `user`
/// (and go with the account when it is deleted).
pub fn hand_over_teams(client: &mut SpiClient<'_>, user: Uuid) {
    let handovers: Vec<(Uuid, Uuid)> = client
        .update(TEAMS_AND_SUCCESSORS.prepared(client), None, &[user.into()])
        .or_fail("finding successors")
        .filter_map(|row| {
            let org: Option<Uuid> = row.get(1).or_fail("finding successors");
            let successor: Option<Uuid> = row.get(2).or_fail("finding successors");
            Some((org?, successor?))
        })
        .collect();
    for (org, successor) in handovers {
        set_owner(client, org, successor);
    }
}

fn set_owner(client: &mut SpiClient<'_>, org: Uuid, owner: Uuid) {
    spi::run(
        client,
        &SET_OWNER,
        &[org.into(), owner.into()],
        "changing the owner",
    );
    spi::run(
        client,
        &SET_ROLE,
        &[org.into(), owner.into(), "owner".into()],
        "changing the owner",
    );
}

static LEAVE_TEAMS: Statement = Statement::write(
    "DELETE FROM organization_members m
     USING organizations o
     WHERE m.user_id = $1 AND o.id = m.organization_id AND NOT o.is_personal AND o.owner_id <> $1",
    &[types::UUID],
);

/// Removes `user` from every team it does not own.
pub fn leave_teams(client: &mut SpiClient<'_>, user: Uuid) {
    spi::run(client, &LEAVE_TEAMS, &[user.into()], "leaving teams");
}

static ANONYMIZE_PERSONAL_ORG: Statement = Statement::write(
    "UPDATE organizations SET name = 'Deleted account', slug = 'deleted-' || $2,
                              description = NULL, avatar_url = NULL
     WHERE owner_id = $1 AND is_personal",
    &[types::UUID, types::TEXT],
);

/// A retired account's personal organization keeps its data but not the person's name.
pub fn anonymize_personal_org(client: &mut SpiClient<'_>, user: Uuid) {
    spi::run(
        client,
        &ANONYMIZE_PERSONAL_ORG,
        &[user.into(), names::random_suffix().into()],
        "anonymizing the personal organization",
    );
}

/// `hand_over_organizations`: BEFORE DELETE ON users. Teams pass to their successors before
/// the profile's foreign keys delete what is left (its personal organization, its memberships,
/// and teams nobody else is in).
#[pg_trigger]
fn hand_over_organizations<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::datum::TryFromDatumError> {
    let Some(old) = trigger.old() else {
        errors::invalid_parameter("hand_over_organizations() must be a row-level DELETE trigger")
    };
    let user: Uuid = errors::required(old.get_by_name("id")?, "users.id");
    Spi::connect_mut(|client| hand_over_teams(client, user));
    Ok(Some(old))
}

static LOCK_ORG: Statement = Statement::write(
    "SELECT o.owner_id, o.is_personal,
            (SELECT m.role FROM organization_members m
             WHERE m.organization_id = o.id AND m.user_id = $2),
            (SELECT m.role FROM organization_members m
             WHERE m.organization_id = o.id AND m.user_id = $3)
     FROM organizations o WHERE o.id = $1
     FOR UPDATE OF o",
    &[types::UUID, types::UUID, types::UUID],
);

/// Makes `new_owner`, a member of the team `org_id`, its owner: `owner_id` and the role
/// `owner` change together, and the previous owner becomes an admin. Callable by a member
/// whose role grants `ownership.transfer` (owners), or by the service role.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn transfer_ownership(org_id: Option<Uuid>, new_owner: Option<Uuid>) {
    let org = errors::required(org_id, "org_id");
    let new_owner = errors::required(new_owner, "new_owner");
    let service = auth_context::caller_is_service_role();
    Spi::connect_mut(|client| {
        let caller = auth_context::current_uid(client);
        let table = client
            .update(
                LOCK_ORG.prepared(client),
                None,
                &[org.into(), caller.into(), new_owner.into()],
            )
            .or_fail("reading the organization");
        let found = (!table.is_empty()).then(|| {
            let row = table.first();
            (
                row.get::<Uuid>(1).or_fail("reading the organization"),
                row.get::<bool>(2)
                    .or_fail("reading the organization")
                    .unwrap_or(false),
                row.get::<String>(3).or_fail("reading the organization"),
                row.get::<String>(4).or_fail("reading the organization"),
            )
        });
        let Some((Some(current), is_personal, caller_role, new_owner_role)) = found else {
            if service {
                errors::invalid_parameter(format!("transfer_ownership: no organization {org}"))
            }
            errors::insufficient_privilege(
                "transfer_ownership: only an owner of the organization may transfer it",
            )
        };
        let may_transfer = caller_role.is_some()
            && caller.is_some_and(|uid| Access::of(client, org, uid).has("ownership.transfer"));
        if !service && !may_transfer {
            errors::insufficient_privilege(
                "transfer_ownership: only an owner of the organization may transfer it",
            );
        }
        if is_personal {
            errors::invalid_parameter(
                "transfer_ownership: a personal organization belongs to its user",
            );
        }
        if new_owner_role.is_none() {
            errors::invalid_parameter(
                "transfer_ownership: the new owner must be a member of the organization",
            );
        }
        set_owner(client, org, new_owner);
        if current != new_owner {
            spi::run(
                client,
                &SET_ROLE,
                &[org.into(), current.into(), "admin".into()],
                "changing the owner",
            );
        }
    })
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::testing::act_as;
    use pgrx::prelude::*;

    const OWNER: &str = "00000000-0000-0000-0000-0000000000c1";
    const ADMIN: &str = "00000000-0000-0000-0000-0000000000c2";
    const MEMBER: &str = "00000000-0000-0000-0000-0000000000c3";
    const OUTSIDER: &str = "00000000-0000-0000-0000-0000000000c4";

    fn users() {
        Spi::run(&format!(
            "INSERT INTO auth.users (id, email) VALUES
               ('{OWNER}', 'owner@example.com'), ('{ADMIN}', 'admin@example.com'),
               ('{MEMBER}', 'member@example.com'), ('{OUTSIDER}', 'outsider@example.com')"
        ))
        .unwrap();
    }

    /// A business-plan team with an owner, an admin and a member. Returns its id.
    fn team() -> String {
        users();
        act_as(OWNER);
        let org =
            Spi::get_one::<pgrx::Uuid>("SELECT create_organization('Acme Labs', 'education')")
                .unwrap()
                .unwrap()
                .to_string();
        Spi::run("RESET ROLE").unwrap();
        Spi::run(&format!(
            "UPDATE org_subscriptions SET plan = 'business' WHERE organization_id = '{org}';
             INSERT INTO organization_members (organization_id, user_id, role)
             VALUES ('{org}', '{ADMIN}', 'admin'), ('{org}', '{MEMBER}', 'member')"
        ))
        .unwrap();
        org
    }

    fn owner_and_roles(org: &str) -> String {
        Spi::get_one::<String>(&format!(
            "SELECT o.owner_id::text || ' ' || string_agg(m.role, ',' ORDER BY m.user_id) || ' ' || o.member_count
             FROM organizations o JOIN organization_members m ON m.organization_id = o.id
             WHERE o.id = '{org}' GROUP BY o.id"
        ))
        .unwrap()
        .unwrap_or_default()
    }

    #[pg_test]
    fn team_org_gets_owner_membership_and_free_plan() {
        users();
        act_as(OWNER);
        let org =
            Spi::get_one::<pgrx::Uuid>("SELECT create_organization('Acme Labs', 'education')")
                .unwrap()
                .unwrap();
        Spi::run("RESET ROLE").unwrap();
        let row = Spi::get_one::<String>(&format!(
            "SELECT o.slug || '/' || o.org_type || '/' || m.role || '/' || s.plan || '/' || o.member_count
             FROM organizations o
             JOIN organization_members m ON m.organization_id = o.id AND m.user_id = o.owner_id
             JOIN org_subscriptions s ON s.organization_id = o.id
             WHERE o.id = '{org}' AND NOT o.is_personal"
        ))
        .unwrap();
        assert_eq!(row.as_deref(), Some("acme-labs/education/owner/free/1"));
    }

    #[pg_test]
    fn derived_slugs_avoid_taken_and_reserved_ones() {
        users();
        act_as(OWNER);
        Spi::run("SELECT create_organization('Same Name')").unwrap();
        Spi::run("SELECT create_organization('Same Name')").unwrap();
        Spi::run("SELECT create_organization('Admin')").unwrap();
        Spi::run("RESET ROLE").unwrap();
        assert_eq!(
            Spi::get_one::<i64>(
                "SELECT count(DISTINCT slug) FROM organizations WHERE name = 'Same Name'"
            )
            .unwrap(),
            Some(2)
        );
        assert_eq!(
            Spi::get_one::<bool>(
                "SELECT slug LIKE 'admin-%' FROM organizations WHERE name = 'Admin'"
            )
            .unwrap(),
            Some(true)
        );
    }

    #[pg_test]
    fn explicit_slugs_of_the_full_length_are_accepted() {
        users();
        act_as(OWNER);
        let slug = "a".repeat(63);
        Spi::run(&format!(
            "SELECT create_organization('Long', 'business', '{slug}')"
        ))
        .unwrap();
        Spi::run("RESET ROLE").unwrap();
        assert_eq!(
            Spi::get_one::<i32>("SELECT char_length(slug) FROM organizations WHERE name = 'Long'")
                .unwrap(),
            Some(63)
        );
    }

    #[pg_test(error = "create_organization: slug \"admin\" is reserved")]
    fn reserved_slugs_are_refused() {
        users();
        act_as(OWNER);
        Spi::run("SELECT create_organization('Admins', 'business', 'admin')").unwrap();
    }

    #[pg_test(error = "organization slug \"billing\" is reserved")]
    fn renaming_to_a_reserved_slug_is_refused() {
        let org = team();
        act_as(OWNER);
        Spi::run(&format!(
            "UPDATE organizations SET slug = 'billing' WHERE id = '{org}'"
        ))
        .unwrap();
    }

    #[pg_test(error = "organization slug \"taken-slug\" is already taken")]
    fn explicit_taken_slug_is_a_unique_violation() {
        users();
        act_as(OWNER);
        Spi::run("SELECT create_organization('One', 'business', 'taken-slug')").unwrap();
        Spi::run("SELECT create_organization('Two', 'business', 'taken-slug')").unwrap();
    }

    #[pg_test(
        error = "create_organization: org_type must be one of business, family, education, other, not \"personal\""
    )]
    fn personal_is_not_a_team_type() {
        users();
        act_as(OWNER);
        Spi::run("SELECT create_organization('Mine', 'personal')").unwrap();
    }

    #[pg_test(error = "create_organization: not authenticated")]
    fn anonymous_callers_cannot_create() {
        Spi::run("SELECT create_organization('Nobody''s')").unwrap();
    }

    #[pg_test(
        error = "create_organization: anonymous users need a permanent account to create organizations"
    )]
    fn anonymous_sign_ins_cannot_create_teams() {
        Spi::run("INSERT INTO auth.users (id, is_anonymous) VALUES ('00000000-0000-0000-0000-0000000000c9', true)").unwrap();
        act_as("00000000-0000-0000-0000-0000000000c9");
        Spi::run("SELECT create_organization('Guests')").unwrap();
    }

    #[pg_test]
    fn an_owner_by_role_can_take_over_and_the_previous_owner_becomes_admin() {
        let org = team();
        Spi::run(&format!("UPDATE organization_members SET role = 'owner' WHERE organization_id = '{org}' AND user_id = '{ADMIN}'")).unwrap();
        act_as(ADMIN);
        Spi::run(&format!("SELECT transfer_ownership('{org}', '{ADMIN}')")).unwrap();
        Spi::run("RESET ROLE").unwrap();
        assert_eq!(
            owner_and_roles(&org),
            format!("{ADMIN} admin,owner,member 3")
        );
    }

    #[pg_test(error = "transfer_ownership: only an owner of the organization may transfer it")]
    fn an_admin_cannot_transfer() {
        let org = team();
        act_as(ADMIN);
        Spi::run(&format!("SELECT transfer_ownership('{org}', '{ADMIN}')")).unwrap();
    }

    #[pg_test(error = "transfer_ownership: the new owner must be a member of the organization")]
    fn ownership_goes_to_members_only() {
        let org = team();
        act_as(OWNER);
        Spi::run(&format!("SELECT transfer_ownership('{org}', '{OUTSIDER}')")).unwrap();
    }

    #[pg_test(error = "the organization's owner must stay a member with the role owner")]
    fn the_owner_cannot_be_removed() {
        let org = team();
        Spi::run(&format!("DELETE FROM organization_members WHERE organization_id = '{org}' AND user_id = '{OWNER}'")).unwrap();
    }

    #[pg_test]
    fn deleting_the_owner_hands_the_team_to_the_admin() {
        let org = team();
        Spi::run(&format!("DELETE FROM auth.users WHERE id = '{OWNER}'")).unwrap();
        assert_eq!(owner_and_roles(&org), format!("{ADMIN} owner,member 2"));
        assert_eq!(
            Spi::get_one::<i64>(&format!(
                "SELECT count(*) FROM organizations WHERE owner_id = '{OWNER}'"
            ))
            .unwrap(),
            Some(0)
        );
    }

    #[pg_test]
    fn a_team_nobody_else_is_in_goes_with_its_owner() {
        users();
        act_as(OUTSIDER);
        let org = Spi::get_one::<pgrx::Uuid>("SELECT create_organization('Solo')")
            .unwrap()
            .unwrap();
        Spi::run("RESET ROLE").unwrap();
        Spi::run(&format!("DELETE FROM auth.users WHERE id = '{OUTSIDER}'")).unwrap();
        assert_eq!(
            Spi::get_one::<i64>(&format!(
                "SELECT count(*) FROM organizations WHERE id = '{org}'"
            ))
            .unwrap(),
            Some(0)
        );
    }

    #[pg_test]
    fn a_removed_creator_no_longer_sees_the_team() {
        let org = team();
        act_as(OWNER);
        Spi::run(&format!("SELECT transfer_ownership('{org}', '{ADMIN}')")).unwrap();
        act_as(ADMIN);
        Spi::run(&format!("DELETE FROM organization_members WHERE organization_id = '{org}' AND user_id = '{OWNER}'")).unwrap();
        act_as(OWNER);
        assert_eq!(
            Spi::get_one::<i64>(&format!(
                "SELECT count(*) FROM organizations WHERE id = '{org}'"
            ))
            .unwrap(),
            Some(0)
        );
    }

    #[pg_test]
    fn member_count_follows_membership() {
        let org = team();
        Spi::run(&format!("DELETE FROM organization_members WHERE organization_id = '{org}' AND user_id = '{MEMBER}'")).unwrap();
        assert_eq!(
            Spi::get_one::<i32>(&format!(
                "SELECT member_count FROM organizations WHERE id = '{org}'"
            ))
            .unwrap(),
            Some(2)
        );
    }
}
