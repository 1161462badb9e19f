//! Identity: profiles, usernames, the signup trigger and onboarding (sql/identity.sql).
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{JsonB, Uuid};

use crate::auth_context;
use crate::errors;
use crate::organizations;
use crate::spi::{types, Expect, Statement};
#[allow(unused_imports)] // named in `requires` below
use crate::timestamps::update_updated_at_column;

pgrx::extension_sql_file!(
    "../sql/identity.sql",
    name = "identity",
    requires = [
        "auth",
        is_valid_username,
        check_username_available,
        complete_onboarding,
        sync_auth_users,
        handle_new_user,
        update_updated_at_column,
    ]
);

/// Usernames that name the product or its staff, never available to users.
const RESERVED_USERNAMES: &[&str] = &[
    "admin",
    "administrator",
    "root",
    "api",
    "support",
    "help",
    "system",
    "sysadmin",
    "staff",
    "billing",
    "security",
    "moderator",
    "owner",
    "superuser",
    "postgres",
    "service",
    "anon",
    "anonymous",
    "authenticated",
    "null",
    "undefined",
    "me",
    "settings",
    "login",
    "logout",
    "signup",
    "register",
    "www",
    "mail",
    "email",
    "info",
    "status",
    "console",
    "dashboard",
];

const USERNAME_MIN: usize = 3;
const USERNAME_MAX: usize = 30;

/// The username rule: 3–30 characters of `[A-Za-z0-9_]`, not reserved (in any case).
/// Used by the `users.username` CHECK constraint and by `check_username_available`.
#[pg_extern(immutable, parallel_safe)]
fn is_valid_username(username: Option<&str>) -> Option<bool> {
    // NULL means "no username", which the CHECK constraint must accept.
    let username = username?;
    Some(username_rule_holds(username))
}

fn username_rule_holds(username: &str) -> bool {
    (USERNAME_MIN..=USERNAME_MAX).contains(&username.len())
        && username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !RESERVED_USERNAMES.contains(&username.to_ascii_lowercase().as_str())
}

static USERNAME_TAKEN: Statement = Statement::read(
    "SELECT EXISTS (SELECT 1 FROM users WHERE lower(username) = lower($1))",
    &[types::TEXT],
);

/// True when `username` follows the rule and nobody has it in any letter case.
/// Malformed or NULL input answers false.
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn check_username_available(username: Option<&str>) -> bool {
    let Some(username) = username.filter(|u| username_rule_holds(u)) else {
        return false;
    };
    Spi::connect(|client| !username_taken(client, username))
}

fn username_taken(client: &SpiClient<'_>, username: &str) -> bool {
    client
        .select(USERNAME_TAKEN.prepared(client), Some(1), &[username.into()])
        .and_then(|t| t.first().get_one::<bool>())
        .or_fail("username lookup failed")
        .unwrap_or(false)
}

/// What signup metadata (`raw_user_meta_data`) may carry, cleaned to fit the profile's constraints.
struct SignupProfile {
    email: Option<String>,
    username: Option<String>,
    display_name: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    avatar_url: Option<String>,
}

impl SignupProfile {
    fn from_auth(email: Option<String>, meta: Option<&serde_json::Value>) -> Self {
        let text = |keys: &[&str]| -> Option<String> {
            let meta = meta?;
            keys.iter().find_map(|k| {
                meta.get(*k)
                    .and_then(|v| v.as_str())
                    .map(|s| s.trim().chars().take(100).collect::<String>())
                    .filter(|s| !s.is_empty())
            })
        };
        let first_name = text(&["first_name", "given_name"]);
        let last_name = text(&["last_name", "family_name"]);
        let display_name = text(&["display_name", "full_name", "name"]).or_else(|| {
            let joined = [first_name.as_deref(), last_name.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            (!joined.is_empty()).then(|| joined.chars().take(100).collect())
        });
        SignupProfile {
            email,
            username: text(&["username", "user_name", "preferred_username"]),
            display_name,
            first_name,
            last_name,
            avatar_url: text(&["avatar_url", "picture"]),
        }
    }

    /// A base for the personal workspace's name and slug.
    fn handle(&self) -> String {
        self.username
            .clone()
            .or_else(|| {
                self.email
                    .as_deref()
                    .and_then(|e| e.split('@').next())
                    .map(str::to_string)
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "user".to_string())
    }
}

static INSERT_PROFILE: Statement = Statement::write(
    "INSERT INTO users (id, email, username, display_name, first_name, last_name, avatar_url)
     VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT DO NOTHING
     RETURNING id",
    &[
        types::UUID,
        types::TEXT,
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

/// Gives a new auth user everything a signup promises: profile, personal organization,
/// owner membership and a free subscription. Idempotent, and never fails on a taken
/// username or slug: it picks a free one instead.
fn provision_user(client: &mut SpiClient<'_>, user_id: Uuid, profile: &SignupProfile) {
    insert_profile(client, user_id, profile);
    let name = match profile.display_name.as_deref() {
        Some(n) => format!("{n}'s workspace"),
        None => format!("{}'s workspace", profile.handle()),
    };
    organizations::ensure_personal_org(client, user_id, &name, &profile.handle());
}

fn insert_profile(client: &mut SpiClient<'_>, user_id: Uuid, profile: &SignupProfile) {
    let requested = profile
        .username
        .as_deref()
        .filter(|u| username_rule_holds(u));
    // The requested username, then variants of it, then none: a signup never aborts on it.
    let mut candidates: Vec<Option<String>> = Vec::new();
    if let Some(base) = requested {
        candidates.push(Some(base.to_string()));
        let stem: String = base.chars().take(USERNAME_MAX - 7).collect();
        for _ in 0..5 {
            candidates.push(Some(format!("{stem}_{}", organizations::random_suffix())));
        }
    }
    candidates.push(None);
    for username in candidates {
        if username
            .as_deref()
            .is_some_and(|u| username_taken(client, u))
        {
            continue;
        }
        let inserted = client
            .update(
                INSERT_PROFILE.prepared(client),
                None,
                &[
                    user_id.into(),
                    profile.email.clone().into(),
                    username.into(),
                    profile.display_name.clone().into(),
                    profile.first_name.clone().into(),
                    profile.last_name.clone().into(),
                    profile.avatar_url.clone().into(),
                ],
            )
            .or_fail("profile insert failed")
            .len();
        if inserted == 1 || profile_exists(client, user_id) {
            return; // created now, or already there (the trigger ran before for this user)
        }
        // Otherwise a concurrent signup took the username between the check and the insert.
    }
    unreachable!("a profile without a username cannot conflict on anything but its id");
}

fn profile_exists(client: &SpiClient<'_>, user_id: Uuid) -> bool {
    client
        .select(PROFILE_EXISTS.prepared(client), Some(1), &[user_id.into()])
        .and_then(|t| t.first().get_one::<bool>())
        .or_fail("profile lookup failed")
        .unwrap_or(false)
}

/// `on_auth_user_created`: AFTER INSERT ON auth.users.
#[pg_trigger]
fn handle_new_user<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::datum::TryFromDatumError> {
    let Some(new) = trigger.new() else {
        errors::invalid_parameter("handle_new_user() must be a row-level INSERT trigger")
    };
    let user_id: Uuid = errors::required(new.get_by_name::<Uuid>("id")?, "auth.users.id");
    let email: Option<String> = new.get_by_name("email")?;
    let meta: Option<JsonB> = new.get_by_name("raw_user_meta_data")?;
    let profile = SignupProfile::from_auth(email, meta.as_ref().map(|j| &j.0));
    Spi::connect_mut(|client| provision_user(client, user_id, &profile));
    Ok(None)
}

static UNPROVISIONED_AUTH_USERS: Statement = Statement::read(
    "SELECT a.id, a.email::text, a.raw_user_meta_data::jsonb
     FROM auth.users a
     WHERE NOT EXISTS (SELECT 1 FROM organizations o WHERE o.owner_id = a.id AND o.is_personal)
     ORDER BY a.created_at, a.id",
    &[],
);

/// Provisions every auth user that has no profile or personal organization yet (users that
/// predate the extension, or were inserted while the trigger was disabled). Returns how many.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn sync_auth_users() -> i64 {
    if !auth_context::caller_is_service_role() {
        errors::insufficient_privilege(
            "sync_auth_users: only the service role may provision users",
        );
    }
    Spi::connect_mut(|client| {
        let pending: Vec<(Uuid, SignupProfile)> = client
            .select(UNPROVISIONED_AUTH_USERS.prepared(client), None, &[])
            .or_fail("reading auth.users failed")
            .map(|row| {
                let id: Uuid = row
                    .get(1)
                    .ok()
                    .flatten()
                    .expect("auth.users.id is NOT NULL");
                let email: Option<String> = row.get(2).ok().flatten();
                let meta: Option<JsonB> = row.get(3).ok().flatten();
                (
                    id,
                    SignupProfile::from_auth(email, meta.as_ref().map(|j| &j.0)),
                )
            })
            .collect();
        for (id, profile) in &pending {
            provision_user(client, *id, profile);
        }
        pending.len() as i64
    })
}

static MARK_ONBOARDED: Statement = Statement::write(
    "UPDATE users
     SET onboarding_completed = true,
         onboarding_completed_at = coalesce(onboarding_completed_at, now())
     WHERE id = $1
     RETURNING id",
    &[types::UUID],
);

/// Marks onboarding complete for `user_id`. Only that user, or the service role.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn complete_onboarding(user_id: Option<Uuid>) {
    let user_id = errors::required(user_id, "user_id");
    Spi::connect_mut(|client| {
        auth_context::require_self_or_service(client, user_id, "complete_onboarding");
        let updated = client
            .update(MARK_ONBOARDED.prepared(client), None, &[user_id.into()])
            .or_fail("onboarding update failed")
            .len();
        if updated == 0 {
            errors::raise(
                pgrx::PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
                format!("complete_onboarding: no user {user_id}"),
            );
        }
    })
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn signup(id: &str, email: &str, meta: &str) {
        Spi::run(&format!(
            "INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES ('{id}', '{email}', '{meta}')"
        ))
        .unwrap();
    }

    fn count(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql).unwrap().unwrap()
    }

    #[pg_test]
    fn username_rule() {
        assert_eq!(
            crate::identity::is_valid_username(Some("ada_99")),
            Some(true)
        );
        assert_eq!(crate::identity::is_valid_username(Some("ab")), Some(false));
        assert_eq!(
            crate::identity::is_valid_username(Some(&"a".repeat(31))),
            Some(false)
        );
        assert_eq!(
            crate::identity::is_valid_username(Some("has space")),
            Some(false)
        );
        assert_eq!(
            crate::identity::is_valid_username(Some("ADMIN")),
            Some(false)
        );
        assert_eq!(
            crate::identity::is_valid_username(Some("é_accent")),
            Some(false)
        );
        assert_eq!(crate::identity::is_valid_username(None), None);
    }

    #[pg_test]
    fn username_availability_is_case_insensitive() {
        signup(
            "00000000-0000-0000-0000-000000000011",
            "ada@example.com",
            r#"{"username":"Ada_L"}"#,
        );
        assert_eq!(
            Spi::get_one::<bool>("SELECT check_username_available('ada_l')").unwrap(),
            Some(false)
        );
        assert_eq!(
            Spi::get_one::<bool>("SELECT check_username_available('ADA_L')").unwrap(),
            Some(false)
        );
        assert_eq!(
            Spi::get_one::<bool>("SELECT check_username_available('grace')").unwrap(),
            Some(true)
        );
        assert_eq!(
            Spi::get_one::<bool>("SELECT check_username_available('root')").unwrap(),
            Some(false)
        );
        assert_eq!(
            Spi::get_one::<bool>("SELECT check_username_available(NULL)").unwrap(),
            Some(false)
        );
        assert_eq!(
            Spi::get_one::<bool>("SELECT check_username_available('x'' OR 1=1 --')").unwrap(),
            Some(false)
        );
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
            Spi::get_one::<String>(&format!("SELECT display_name FROM users WHERE id = {id}"))
                .unwrap()
                .as_deref(),
            Some("Grace Hopper")
        );
        assert_eq!(
            Spi::get_one::<String>(&format!("SELECT email FROM users WHERE id = {id}"))
                .unwrap()
                .as_deref(),
            Some("grace@example.com")
        );
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM organizations o
                 JOIN organization_members m ON m.organization_id = o.id AND m.user_id = o.owner_id AND m.role = 'owner'
                 JOIN org_subscriptions s ON s.organization_id = o.id AND s.plan = 'free' AND s.status = 'active'
                 WHERE o.owner_id = {id} AND o.is_personal AND o.org_type = 'personal' AND o.slug = 'grace'"
            )),
            1
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
    fn overlong_or_odd_metadata_is_cleaned_not_fatal() {
        let long = "x".repeat(500);
        signup(
            "00000000-0000-0000-0000-000000000041",
            "odd@example.com",
            &format!(r#"{{"full_name":"{long}","username":"no spaces allowed","avatar_url":42}}"#),
        );
        assert_eq!(
            count("SELECT count(*) FROM users WHERE id = '00000000-0000-0000-0000-000000000041' AND username IS NULL AND char_length(display_name) = 100"),
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
        // Remove the personal org so sync_auth_users sees the user as unprovisioned, then run it twice.
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
    fn complete_onboarding_for_self_only() {
        signup(
            "00000000-0000-0000-0000-000000000061",
            "ob@example.com",
            "{}",
        );
        signup(
            "00000000-0000-0000-0000-000000000062",
            "other@example.com",
            "{}",
        );
        Spi::run("SET LOCAL ROLE authenticated").unwrap();
        Spi::run("SELECT set_config('request.jwt.claims', '{\"sub\":\"00000000-0000-0000-0000-000000000061\"}', true)").unwrap();
        Spi::run("SELECT complete_onboarding('00000000-0000-0000-0000-000000000061')").unwrap();
        Spi::run("RESET ROLE").unwrap();
        assert_eq!(
            count("SELECT count(*) FROM users WHERE onboarding_completed AND onboarding_completed_at IS NOT NULL AND id = '00000000-0000-0000-0000-000000000061'"),
            1
        );
    }

    #[pg_test(error = "complete_onboarding: a user may only act for themself")]
    fn complete_onboarding_for_someone_else_is_refused() {
        signup(
            "00000000-0000-0000-0000-000000000071",
            "me@example.com",
            "{}",
        );
        signup(
            "00000000-0000-0000-0000-000000000072",
            "you@example.com",
            "{}",
        );
        Spi::run("SET LOCAL ROLE authenticated").unwrap();
        Spi::run("SELECT set_config('request.jwt.claims', '{\"sub\":\"00000000-0000-0000-0000-000000000071\"}', true)").unwrap();
        Spi::run("SELECT complete_onboarding('00000000-0000-0000-0000-000000000072')").unwrap();
    }

    #[pg_test(error = "user_id must not be NULL")]
    fn complete_onboarding_rejects_null() {
        Spi::run("SELECT complete_onboarding(NULL)").unwrap();
    }
}
