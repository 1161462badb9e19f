//! Provisioning: keeps saas_core's profiles in step with the sign-in accounts in `auth.users`
//! (sql/provisioning.sql). It composes the domains: a signup gets a profile (identity), a
//! personal organization with its owner membership (organizations) and the free plan
//! (billing); account changes, soft deletes and deletes follow.
//!
//! `auth.users` differs between Supabase versions (GoTrue adds `phone`, `deleted_at`,
//! `is_anonymous` over time) and may be saas_core's own minimal table: accounts are read
//! through `to_jsonb(row)`, so a missing column reads as absent, never as an error. Metadata
//! is read in SQL, key by key: JSON that jsonb accepts but a Rust parser would refuse
//! (200-deep arrays, 1e400) is never parsed here.
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::Uuid;

use crate::auth_context;
use crate::backup;
use crate::errors;
use crate::identity::{self, ProfileHints, METADATA_KEYS};
use crate::names;
use crate::organizations;
use crate::spi::{self, types, Expect, Statement};

pgrx::extension_sql_file!(
    "../sql/provisioning.sql",
    name = "provisioning",
    requires = [
        "recording",
        provision_auth_user,
        sync_auth_user,
        remove_auth_user,
        provision_missing_auth_users,
    ]
);

/// A sign-in account as provisioning needs it.
pub struct AuthAccount {
    pub id: Uuid,
    email: Option<String>,
    phone: Option<String>,
    is_anonymous: bool,
    deleted: bool,
    hints: ProfileHints,
}

/// The select list and joins that read accounts; `$1` is METADATA_KEYS.
macro_rules! read_accounts {
    ($filter:literal) => {
        Statement::read(
            concat!(
                "SELECT a.id, j ->> 'email', j ->> 'phone',
                        coalesce((j ->> 'is_anonymous')::boolean, false),
                        j ->> 'deleted_at' IS NOT NULL,
                        m.keys, m.vals
                 FROM auth.users a
                 CROSS JOIN LATERAL pg_catalog.to_jsonb(a) AS j
                 CROSS JOIN LATERAL (
                     SELECT array_agg(k.key ORDER BY k.n) AS keys,
                            array_agg(k.v #>> '{}' ORDER BY k.n) AS vals
                     FROM (SELECT u.key, u.n,
                                  j -> 'raw_user_meta_data' #> pg_catalog.string_to_array(u.key, '.') AS v
                           FROM unnest($1::text[]) WITH ORDINALITY AS u (key, n)) k
                     WHERE pg_catalog.jsonb_typeof(k.v) = 'string'
                 ) m ",
                $filter
            ),
            &[types::TEXT_ARRAY, types::UUID],
        )
    };
}

static READ_ACCOUNT: Statement = read_accounts!("WHERE a.id = $2");
static READ_UNPROVISIONED_ACCOUNTS: Statement = read_accounts!(
    "WHERE $2 IS NULL AND NOT EXISTS (SELECT 1 FROM organizations o WHERE o.owner_id = a.id AND o.is_personal)
     ORDER BY a.created_at, a.id"
);

fn accounts(
    client: &SpiClient<'_>,
    statement: &'static Statement,
    id: Option<Uuid>,
) -> Vec<AuthAccount> {
    let keys: Vec<&str> = METADATA_KEYS.to_vec();
    client
        .select(statement.prepared(client), None, &[keys.into(), id.into()])
        .or_fail("reading auth.users")
        .map(|row| {
            let keys: Vec<Option<String>> =
                row.get(6).or_fail("reading auth.users").unwrap_or_default();
            let vals: Vec<Option<String>> =
                row.get(7).or_fail("reading auth.users").unwrap_or_default();
            let pairs: Vec<(String, String)> = keys
                .into_iter()
                .zip(vals)
                .filter_map(|(k, v)| Some((k?, v?)))
                .collect();
            AuthAccount {
                id: errors::required(row.get(1).or_fail("reading auth.users"), "auth.users.id"),
                email: row.get(2).or_fail("reading auth.users"),
                phone: row.get(3).or_fail("reading auth.users"),
                is_anonymous: row.get(4).or_fail("reading auth.users").unwrap_or(false),
                deleted: row.get(5).or_fail("reading auth.users").unwrap_or(false),
                hints: ProfileHints::from_metadata(&pairs),
            }
        })
        .collect()
}

/// Which `users` columns the database has: the library also serves databases still on the
/// 0.1.0 schema until `ALTER EXTENSION saas_core UPDATE` (see `legacy_v0_1`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ProfileSchema {
    Current,
    V0_1,
}

static INSERT_PROFILE: Statement = Statement::write(
    "INSERT INTO users (id, email, phone, is_anonymous, username, display_name, first_name, last_name, avatar_url)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
     ON CONFLICT DO NOTHING
     RETURNING id",
    &[
        types::UUID,
        types::TEXT,
        types::TEXT,
        types::BOOL,
        types::TEXT,
        types::TEXT,
        types::TEXT,
        types::TEXT,
        types::TEXT,
    ],
);

static INSERT_PROFILE_V0_1: Statement = Statement::write(
    "INSERT INTO users (id, email, username, display_name, first_name, last_name, avatar_url)
     VALUES ($1, $2, $5, $6, $7, $8, $9)
     ON CONFLICT DO NOTHING
     RETURNING id",
    &[
        types::UUID,
        types::TEXT,
        types::TEXT,
        types::BOOL,
        types::TEXT,
        types::TEXT,
        types::TEXT,
        types::TEXT,
        types::TEXT,
    ],
);

static PROFILE_EXISTS: Statement = Statement::read(
    "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)",
    &[types::UUID],
);

fn profile_exists(client: &SpiClient<'_>, id: Uuid) -> bool {
    spi::one::<bool>(client, &PROFILE_EXISTS, &[id.into()], "reading the profile").unwrap_or(false)
}

/// The requested username if it may be chosen, then variants of it, then none: a signup
/// never aborts on a username.
fn username_candidates(requested: Option<&str>) -> Vec<Option<String>> {
    let mut candidates = Vec::new();
    if let Some(base) = requested.filter(|u| names::check_new_username(u).is_ok()) {
        candidates.push(Some(base.to_string()));
    }
    if let Some(base) = requested {
        let stem = names::username_stem(base);
        for _ in 0..5 {
            candidates.push(Some(format!("{stem}_{}", names::random_suffix())));
        }
    }
    candidates.push(None);
    candidates
}

/// Gives an account everything a signup promises: profile, personal organization, owner
/// membership and the free plan. Idempotent; soft-deleted accounts get nothing.
pub fn provision(client: &mut SpiClient<'_>, account: &AuthAccount, schema: ProfileSchema) {
    if account.deleted {
        return;
    }
    insert_profile(client, account, schema);
    let hints = &account.hints;
    let handle = hints
        .username
        .clone()
        .or_else(|| {
            account
                .email
                .as_deref()
                .and_then(|e| e.split('@').next())
                .filter(|h| !h.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| {
            if account.is_anonymous {
                "guest"
            } else {
                "user"
            }
            .to_string()
        });
    let name = match (&hints.display_name, account.is_anonymous) {
        (Some(n), _) => format!("{n}'s workspace"),
        (None, true) => "Guest workspace".to_string(),
        (None, false) => format!("{handle}'s workspace"),
    };
    organizations::ensure_personal_org(client, account.id, &name, &handle);
}

fn insert_profile(client: &mut SpiClient<'_>, account: &AuthAccount, schema: ProfileSchema) {
    let statement = match schema {
        ProfileSchema::Current => &INSERT_PROFILE,
        ProfileSchema::V0_1 => &INSERT_PROFILE_V0_1,
    };
    let hints = &account.hints;
    for username in username_candidates(hints.username.as_deref()) {
        if username
            .as_deref()
            .is_some_and(|u| identity::username_taken(client, u, None))
        {
            continue;
        }
        let inserted = spi::run(
            client,
            statement,
            &[
                account.id.into(),
                account.email.clone().into(),
                account.phone.clone().into(),
                account.is_anonymous.into(),
                username.into(),
                hints.display_name.clone().into(),
                hints.first_name.clone().into(),
                hints.last_name.clone().into(),
                hints.avatar_url.clone().into(),
            ],
            "creating the profile",
        );
        if inserted == 1 || profile_exists(client, account.id) {
            return; // created now, or already there (provisioned before)
        }
        // Otherwise a concurrent signup took the username between the check and the insert.
    }
    errors::internal(
        "creating the profile",
        "a profile without a username conflicted on something other than its id",
    )
}

/// Provisions one account by id (the signup trigger; the legacy 0.1.0 trigger too).
pub fn provision_account(client: &mut SpiClient<'_>, id: Uuid, schema: ProfileSchema) {
    for account in accounts(client, &READ_ACCOUNT, Some(id)) {
        provision(client, &account, schema);
    }
}

static READ_UNRETIRED_ACCOUNTS: Statement = Statement::read(
    "SELECT a.id, (j ->> 'deleted_at')::timestamptz
     FROM auth.users a
     CROSS JOIN LATERAL pg_catalog.to_jsonb(a) AS j
     JOIN users u ON u.id = a.id
     WHERE j ->> 'deleted_at' IS NOT NULL AND u.deleted_at IS NULL
     ORDER BY a.id",
    &[],
);

/// Brings profiles in line with auth.users: provisions every account that has no personal
/// organization yet and retires profiles whose account was soft-deleted while nothing
/// followed it. Returns how many accounts it changed.
pub fn provision_missing(client: &mut SpiClient<'_>, schema: ProfileSchema) -> i64 {
    let pending = accounts(client, &READ_UNPROVISIONED_ACCOUNTS, None);
    let mut changed = 0;
    for account in pending.iter().filter(|a| !a.deleted) {
        provision(client, account, schema);
        changed += 1;
    }
    if schema == ProfileSchema::Current {
        let retired: Vec<(Uuid, TimestampWithTimeZone)> = client
            .select(READ_UNRETIRED_ACCOUNTS.prepared(client), None, &[])
            .or_fail("reading auth.users")
            .filter_map(|row| {
                Some((
                    row.get::<Uuid>(1).or_fail("reading auth.users")?,
                    row.get::<TimestampWithTimeZone>(2)
                        .or_fail("reading auth.users")?,
                ))
            })
            .collect();
        for (id, at) in retired {
            retire_account(client, id, at);
            changed += 1;
        }
    }
    changed
}

/// `saas_core_provision_user`: AFTER INSERT ON auth.users. Restored accounts come with their
/// profiles in the same dump, so a restore provisions nothing.
#[pg_trigger]
fn provision_auth_user<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::datum::TryFromDatumError> {
    let Some(new) = trigger.new() else {
        errors::invalid_parameter("provision_auth_user() must be a row-level INSERT trigger")
    };
    if backup::restore_in_progress() {
        return Ok(None);
    }
    let id: Uuid = errors::required(new.get_by_name::<Uuid>("id")?, "auth.users.id");
    Spi::connect_mut(|client| provision_account(client, id, ProfileSchema::Current));
    Ok(None)
}

/// The columns of `auth.users` the profile follows, read leniently: a column this version of
/// GoTrue does not have yet reads as absent.
#[derive(PartialEq)]
struct Followed {
    email: Option<String>,
    phone: Option<String>,
    is_anonymous: bool,
    deleted_at: Option<TimestampWithTimeZone>,
}

impl Followed {
    fn of(row: &PgHeapTuple<'_, AllocatedByPostgres>) -> Self {
        Followed {
            email: row.get_by_name("email").ok().flatten(),
            phone: row.get_by_name("phone").ok().flatten(),
            is_anonymous: row
                .get_by_name::<bool>("is_anonymous")
                .ok()
                .flatten()
                .unwrap_or(false),
            deleted_at: row.get_by_name("deleted_at").ok().flatten(),
        }
    }
}

static MIRROR_ACCOUNT: Statement = Statement::write(
    "UPDATE users SET email = $2, phone = $3, is_anonymous = $4
     WHERE id = $1 AND (email, phone, is_anonymous) IS DISTINCT FROM ($2, $3, $4)",
    &[types::UUID, types::TEXT, types::TEXT, types::BOOL],
);

static FILL_PROFILE_GAPS: Statement = Statement::write(
    "UPDATE users SET display_name = coalesce(display_name, $2),
                      first_name = coalesce(first_name, $3),
                      last_name = coalesce(last_name, $4),
                      avatar_url = coalesce(avatar_url, $5)
     WHERE id = $1",
    &[
        types::UUID,
        types::TEXT,
        types::TEXT,
        types::TEXT,
        types::TEXT,
    ],
);

static CLAIM_USERNAME: Statement = Statement::write(
    "UPDATE users SET username = $2 WHERE id = $1 AND username IS NULL",
    &[types::UUID, types::TEXT],
);

/// `saas_core_sync_user`: AFTER UPDATE ON auth.users. Email and phone changes, an anonymous
/// account becoming permanent, and GoTrue's soft delete reach the profile. An account that
/// somehow has no profile gets one at its next update (GoTrue updates on every sign-in).
#[pg_trigger]
fn sync_auth_user<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::datum::TryFromDatumError> {
    let (Some(old), Some(new)) = (trigger.old(), trigger.new()) else {
        errors::invalid_parameter("sync_auth_user() must be a row-level UPDATE trigger")
    };
    if backup::restore_in_progress() {
        return Ok(None);
    }
    let id: Uuid = errors::required(new.get_by_name::<Uuid>("id")?, "auth.users.id");
    let (before, after) = (Followed::of(&old), Followed::of(&new));
    Spi::connect_mut(|client| {
        if !profile_exists(client, id) {
            provision_account(client, id, ProfileSchema::Current);
            return;
        }
        if before.deleted_at.is_some() || before == after {
            return;
        }
        if let Some(at) = after.deleted_at {
            retire_account(client, id, at);
            return;
        }
        spi::run(
            client,
            &MIRROR_ACCOUNT,
            &[
                id.into(),
                after.email.clone().into(),
                after.phone.clone().into(),
                after.is_anonymous.into(),
            ],
            "updating the profile",
        );
        if before.is_anonymous && !after.is_anonymous {
            become_permanent(client, id);
        }
    });
    Ok(None)
}

/// An anonymous account converted to a permanent one (an email, a phone or an OAuth identity
/// linked): what its metadata now says fills the profile's empty fields.
fn become_permanent(client: &mut SpiClient<'_>, id: Uuid) {
    let Some(account) = accounts(client, &READ_ACCOUNT, Some(id)).into_iter().next() else {
        return;
    };
    let hints = &account.hints;
    spi::run(
        client,
        &FILL_PROFILE_GAPS,
        &[
            id.into(),
            hints.display_name.clone().into(),
            hints.first_name.clone().into(),
            hints.last_name.clone().into(),
            hints.avatar_url.clone().into(),
        ],
        "completing the profile",
    );
    let free = username_candidates(hints.username.as_deref())
        .into_iter()
        .flatten()
        .find(|u| !identity::username_taken(client, u, Some(id)));
    if let Some(username) = free {
        spi::run(
            client,
            &CLAIM_USERNAME,
            &[id.into(), username.into()],
            "completing the profile",
        );
    }
}

static ANONYMIZE_PROFILE: Statement = Statement::write(
    "UPDATE users SET
        username = NULL, display_name = NULL, personal_title = NULL, first_name = NULL,
        middle_name = NULL, last_name = NULL, avatar_url = NULL, email = NULL, phone = NULL,
        phone_country_code = NULL, phone_number = NULL,
        personal_apt_suite = NULL, personal_street_address_1 = NULL, personal_street_address_2 = NULL,
        personal_city = NULL, personal_state = NULL, personal_postal_code = NULL, personal_country = NULL,
        bio = NULL, website = NULL, education = '[]', work_experience = '[]',
        business_position = NULL, business_company = NULL, business_apt_suite = NULL,
        business_street_address_1 = NULL, business_street_address_2 = NULL, business_city = NULL,
        business_state = NULL, business_postal_code = NULL, business_country = NULL,
        timezone = NULL, locale = NULL, preferences = '{}', last_active_at = NULL,
        deleted_at = $2
     WHERE id = $1",
    &[types::UUID, types::TIMESTAMPTZ],
);

/// GoTrue's soft delete: the account stays (anonymized) for its foreign keys. Its teams pass to
/// their successors, it leaves the teams it does not own, and the profile keeps no personal data.
fn retire_account(client: &mut SpiClient<'_>, id: Uuid, deleted_at: TimestampWithTimeZone) {
    organizations::hand_over_teams(client, id);
    organizations::leave_teams(client, id);
    organizations::anonymize_personal_org(client, id);
    spi::run(
        client,
        &ANONYMIZE_PROFILE,
        &[id.into(), deleted_at.into()],
        "anonymizing the profile",
    );
}

static DELETE_PROFILE: Statement =
    Statement::write("DELETE FROM users WHERE id = $1", &[types::UUID]);

/// `saas_core_delete_user`: AFTER DELETE ON auth.users. The profile goes, and with it (by its
/// foreign keys) the personal organization and memberships; teams pass to their successors
/// first (`hand_over_organizations` on users).
#[pg_trigger]
fn remove_auth_user<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::datum::TryFromDatumError> {
    let Some(old) = trigger.old() else {
        errors::invalid_parameter("remove_auth_user() must be a row-level DELETE trigger")
    };
    let id: Uuid = errors::required(old.get_by_name::<Uuid>("id")?, "auth.users.id");
    Spi::connect_mut(|client| {
        spi::run(
            client,
            &DELETE_PROFILE,
            &[id.into()],
            "deleting the profile",
        )
    });
    Ok(None)
}

/// Provisions every account in auth.users that has no profile or personal organization yet
/// (accounts that predate the extension, or were inserted while its triggers were absent).
/// Returns how many. Service role only.
#[pg_extern(volatile, security_definer, name = "sync_auth_users")]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn provision_missing_auth_users() -> i64 {
    if !auth_context::caller_is_service_role() {
        errors::insufficient_privilege(
            "sync_auth_users: only the service role may provision users",
        );
    }
    Spi::connect_mut(|client| provision_missing(client, ProfileSchema::Current))
}

/// The install script's provisioning of accounts that predate the extension (seed 000 §10).
/// A restore brings those profiles with it, so then it does nothing.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn provision_existing_accounts_at_install() -> i64 {
    if backup::restore_in_progress() {
        return 0;
    }
    Spi::connect_mut(|client| provision_missing(client, ProfileSchema::Current))
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn signup(id: &str, email: &str, meta: &str) {
        Spi::run_with_args(
            "INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES ($1::uuid, $2, $3::jsonb)",
            &[id.into(), email.into(), meta.into()],
        )
        .unwrap();
    }

    fn count(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql).unwrap().unwrap()
    }

    fn text(sql: &str) -> Option<String> {
        Spi::get_one::<String>(sql).unwrap()
    }

    #[pg_test]
    fn signup_creates_profile_personal_org_membership_and_free_subscription() {
        signup(
            "00000000-0000-0000-0000-000000000021",
            "grace@example.com",
            r#"{"first_name":"Grace","last_name":"Hopper","username":"grace"}"#,
        );
        let id = "'00000000-0000-0000-0000-000000000021'";
        assert_eq!(
            text(&format!(
                "SELECT display_name || '/' || email || '/' || username FROM users WHERE id = {id}"
            ))
            .as_deref(),
            Some("Grace Hopper/grace@example.com/grace")
        );
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM organizations o
                 JOIN organization_members m ON m.organization_id = o.id AND m.user_id = o.owner_id AND m.role = 'owner'
                 JOIN org_subscriptions s ON s.organization_id = o.id AND s.plan = 'free' AND s.status = 'active'
                 WHERE o.owner_id = {id} AND o.is_personal AND o.org_type = 'personal' AND o.slug = 'grace'
                   AND o.member_count = 1"
            )),
            1
        );
    }

    #[pg_test]
    fn github_logins_become_usernames() {
        signup(
            "00000000-0000-0000-0000-000000000022",
            "mona@example.com",
            r#"{"user_name":"mona-lisa","name":"Mona Lisa","avatar_url":"https://a.example/m.png"}"#,
        );
        assert_eq!(
            text("SELECT username || '/' || display_name FROM users WHERE id = '00000000-0000-0000-0000-000000000022'").as_deref(),
            Some("mona_lisa/Mona Lisa")
        );
    }

    #[pg_test]
    fn colliding_usernames_and_slugs_never_abort_a_signup() {
        signup(
            "00000000-0000-0000-0000-000000000031",
            "a@one.example",
            r#"{"username":"sam"}"#,
        );
        signup(
            "00000000-0000-0000-0000-000000000032",
            "a@two.example",
            r#"{"username":"SAM"}"#,
        );
        signup(
            "00000000-0000-0000-0000-000000000033",
            "sam@three.example",
            "{}",
        );
        assert_eq!(count("SELECT count(*) FROM users WHERE id::text LIKE '00000000-0000-0000-0000-00000000003%'"), 3);
        assert_eq!(
            count("SELECT count(DISTINCT lower(username)) FROM users WHERE username ILIKE 'sam%'"),
            2
        );
        assert_eq!(count("SELECT count(DISTINCT slug) FROM organizations WHERE owner_id::text LIKE '00000000-0000-0000-0000-00000000003%'"), 3);
    }

    #[pg_test]
    fn hostile_metadata_is_treated_as_absent() {
        let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
        for (n, meta) in [
            format!(r#"{{"a":{deep},"username":"deep_one"}}"#),
            r#"{"score":1e400,"username":"big_number"}"#.to_string(),
            r#"{"username":{"nested":"object"},"full_name":["array"]}"#.to_string(),
            r#""just a string""#.to_string(),
            "[1,2,3]".to_string(),
            "null".to_string(),
        ]
        .iter()
        .enumerate()
        {
            signup(
                &format!("00000000-0000-0000-0000-00000000004{n}"),
                &format!("h{n}@example.com"),
                meta,
            );
        }
        assert_eq!(count("SELECT count(*) FROM users WHERE id::text LIKE '00000000-0000-0000-0000-00000000004%'"), 6);
        assert_eq!(count("SELECT count(*) FROM organizations WHERE is_personal AND owner_id::text LIKE '00000000-0000-0000-0000-00000000004%'"), 6);
        // The well-formed keys next to the hostile ones still count.
        assert_eq!(
            count("SELECT count(*) FROM users WHERE username IN ('deep_one', 'big_number')"),
            2
        );
        assert_eq!(count("SELECT count(*) FROM users WHERE id = '00000000-0000-0000-0000-000000000042' AND username IS NULL AND display_name IS NULL"), 1);
        // The repair path reads the same accounts and does not abort either.
        Spi::run("DELETE FROM organizations WHERE owner_id::text LIKE '00000000-0000-0000-0000-00000000004%'").unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT sync_auth_users()").unwrap(),
            Some(6)
        );
    }

    #[pg_test]
    fn overlong_metadata_is_cleaned_not_fatal() {
        let long = "x".repeat(500);
        signup(
            "00000000-0000-0000-0000-000000000049",
            "odd@example.com",
            &format!(r#"{{"full_name":"{long}","username":"no spaces allowed","avatar_url":42}}"#),
        );
        assert_eq!(
            count("SELECT count(*) FROM users WHERE id = '00000000-0000-0000-0000-000000000049' AND username = 'no_spaces_allowed' AND char_length(display_name) = 100 AND avatar_url IS NULL"),
            1
        );
    }

    #[pg_test]
    fn provisioning_twice_is_harmless() {
        signup(
            "00000000-0000-0000-0000-000000000051",
            "twice@example.com",
            "{}",
        );
        Spi::run(
            "DELETE FROM organizations WHERE owner_id = '00000000-0000-0000-0000-000000000051'",
        )
        .unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT sync_auth_users()").unwrap(),
            Some(1)
        );
        assert_eq!(
            Spi::get_one::<i64>("SELECT sync_auth_users()").unwrap(),
            Some(0)
        );
        assert_eq!(
            count("SELECT count(*) FROM users WHERE id = '00000000-0000-0000-0000-000000000051'"),
            1
        );
        assert_eq!(count("SELECT count(*) FROM organizations WHERE owner_id = '00000000-0000-0000-0000-000000000051'"), 1);
    }

    #[pg_test]
    fn email_and_phone_changes_reach_the_profile() {
        signup(
            "00000000-0000-0000-0000-000000000081",
            "old@example.com",
            "{}",
        );
        Spi::run("UPDATE auth.users SET email = 'new@example.com', phone = '15550001111' WHERE id = '00000000-0000-0000-0000-000000000081'").unwrap();
        assert_eq!(
            text("SELECT email || '/' || phone FROM users WHERE id = '00000000-0000-0000-0000-000000000081'").as_deref(),
            Some("new@example.com/15550001111")
        );
    }

    #[pg_test]
    fn an_anonymous_account_becomes_permanent() {
        Spi::run("INSERT INTO auth.users (id, is_anonymous) VALUES ('00000000-0000-0000-0000-000000000082', true)").unwrap();
        assert_eq!(
            count("SELECT count(*) FROM users u JOIN organizations o ON o.owner_id = u.id AND o.is_personal
                   WHERE u.id = '00000000-0000-0000-0000-000000000082' AND u.is_anonymous AND u.email IS NULL AND o.name = 'Guest workspace'"),
            1
        );
        Spi::run(
            r#"UPDATE auth.users SET is_anonymous = false, email = 'kept@example.com',
                    raw_user_meta_data = '{"user_name":"kept-me","full_name":"Kept Me"}'
                    WHERE id = '00000000-0000-0000-0000-000000000082'"#,
        )
        .unwrap();
        assert_eq!(
            text("SELECT email || '/' || username || '/' || display_name || '/' || is_anonymous FROM users WHERE id = '00000000-0000-0000-0000-000000000082'").as_deref(),
            Some("kept@example.com/kept_me/Kept Me/false")
        );
    }

    #[pg_test]
    fn soft_delete_clears_personal_data() {
        signup(
            "00000000-0000-0000-0000-000000000083",
            "gone@example.com",
            r#"{"username":"gone","full_name":"Gone Person"}"#,
        );
        Spi::run("UPDATE users SET bio = 'about me', personal_city = 'Paris' WHERE id = '00000000-0000-0000-0000-000000000083'").unwrap();
        Spi::run("UPDATE auth.users SET deleted_at = now(), email = 'obfuscated@deleted.invalid', raw_user_meta_data = '{}' WHERE id = '00000000-0000-0000-0000-000000000083'").unwrap();
        assert_eq!(
            count("SELECT count(*) FROM users WHERE id = '00000000-0000-0000-0000-000000000083'
                   AND deleted_at IS NOT NULL AND username IS NULL AND display_name IS NULL AND email IS NULL
                   AND bio IS NULL AND personal_city IS NULL"),
            1
        );
        assert_eq!(
            count("SELECT count(*) FROM organizations WHERE owner_id = '00000000-0000-0000-0000-000000000083' AND is_personal AND name = 'Deleted account' AND slug LIKE 'deleted-%'"),
            1
        );
        // Later updates to the retired account change nothing.
        Spi::run("UPDATE auth.users SET email = 'again@example.com' WHERE id = '00000000-0000-0000-0000-000000000083'").unwrap();
        assert_eq!(count("SELECT count(*) FROM users WHERE id = '00000000-0000-0000-0000-000000000083' AND email IS NULL"), 1);
    }

    #[pg_test]
    fn a_missing_profile_is_created_at_the_next_account_update() {
        Spi::run("ALTER TABLE auth.users DISABLE TRIGGER saas_core_provision_user").unwrap();
        signup(
            "00000000-0000-0000-0000-000000000084",
            "late@example.com",
            "{}",
        );
        Spi::run("ALTER TABLE auth.users ENABLE TRIGGER saas_core_provision_user").unwrap();
        assert_eq!(
            count("SELECT count(*) FROM users WHERE id = '00000000-0000-0000-0000-000000000084'"),
            0
        );
        Spi::run("UPDATE auth.users SET last_sign_in_at = now() WHERE id = '00000000-0000-0000-0000-000000000084'").unwrap();
        assert_eq!(
            count("SELECT count(*) FROM users WHERE id = '00000000-0000-0000-0000-000000000084'"),
            1
        );
    }

    #[pg_test]
    fn restored_accounts_are_not_provisioned() {
        Spi::run("SET LOCAL check_function_bodies = off").unwrap();
        Spi::run("SET LOCAL row_security = off").unwrap();
        signup(
            "00000000-0000-0000-0000-000000000085",
            "restored@example.com",
            "{}",
        );
        assert_eq!(
            count("SELECT count(*) FROM users WHERE id = '00000000-0000-0000-0000-000000000085'"),
            0
        );
    }
}
