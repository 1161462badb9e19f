//! Identity: one profile per sign-in account, its username and onboarding (sql/identity.sql).
//! Keeping profiles in step with `auth.users` is `provisioning`'s job.
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::Uuid;

use crate::auth_context;
use crate::backup;
use crate::errors;
use crate::names::{self, Refusal};
use crate::spi::{self, types, Statement};
#[allow(unused_imports)] // named in `requires` below
use crate::{names::is_valid_username, timestamps::update_updated_at_column};

pgrx::extension_sql_file!(
    "../sql/identity.sql",
    name = "identity",
    requires = [
        "backup",
        is_valid_username,
        check_username_available,
        complete_onboarding,
        check_profile,
        update_updated_at_column,
    ]
);

static USERNAME_TAKEN: Statement = Statement::read(
    "SELECT EXISTS (SELECT 1 FROM users WHERE lower(username) = lower($1) AND id IS DISTINCT FROM $2)",
    &[types::TEXT, types::UUID],
);

/// True when `username` follows the rule and nobody has it in any letter case.
/// Malformed or NULL input answers false.
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn check_username_available(username: Option<&str>) -> bool {
    let Some(username) = username.filter(|u| names::check_new_username(u).is_ok()) else {
        return false;
    };
    Spi::connect(|client| !username_taken(client, username, None))
}

/// True when someone other than `owner` has `username` in any letter case.
pub fn username_taken(client: &SpiClient<'_>, username: &str, owner: Option<Uuid>) -> bool {
    spi::one::<bool>(
        client,
        &USERNAME_TAKEN,
        &[username.into(), owner.into()],
        "looking up a username",
    )
    .unwrap_or(false)
}

/// What an auth account's `raw_user_meta_data` says about its person, cleaned to fit the
/// profile. Providers name things differently: the first key present wins.
#[derive(Default)]
pub struct ProfileHints {
    pub username: Option<String>,
    pub display_name: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub avatar_url: Option<String>,
}

/// Metadata keys read, in order of preference per field (dotted keys are nested).
/// GitHub: user_name / name / avatar_url; Google: full_name, given_name, family_name, picture;
/// Discord: custom_claims.global_name; Keycloak/Azure: preferred_username (skipped when an email).
pub const METADATA_KEYS: &[&str] = &[
    "username",
    "user_name",
    "preferred_username",
    "nickname",
    "display_name",
    "full_name",
    "name",
    "custom_claims.global_name",
    "first_name",
    "given_name",
    "last_name",
    "family_name",
    "avatar_url",
    "picture",
];

impl ProfileHints {
    /// From the string-valued metadata keys (pairs of key and value, as `provisioning` reads
    /// them in SQL: metadata that is not an object, or values that are not strings, are absent).
    pub fn from_metadata(pairs: &[(String, String)]) -> Self {
        let text = |keys: &[&str]| -> Option<String> {
            keys.iter().find_map(|k| {
                pairs
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.trim().chars().take(100).collect::<String>())
                    .filter(|s| !s.is_empty())
            })
        };
        let handles = ["username", "user_name", "preferred_username", "nickname"];
        let username = handles
            .iter()
            .find_map(|k| text(&[k]).and_then(|h| names::username_from_handle(&h)));
        let first_name = text(&["first_name", "given_name"]);
        let last_name = text(&["last_name", "family_name"]);
        let display_name = text(&[
            "display_name",
            "full_name",
            "name",
            "custom_claims.global_name",
        ])
        .or_else(|| {
            let joined = [first_name.as_deref(), last_name.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            (!joined.is_empty()).then(|| joined.chars().take(100).collect())
        })
        .or_else(|| text(&handles).filter(|h| !h.contains('@')));
        ProfileHints {
            username,
            display_name,
            first_name,
            last_name,
            avatar_url: text(&["avatar_url", "picture"]),
        }
    }
}

/// `check_profile`: BEFORE INSERT OR UPDATE OF id, username ON users. The username rule with
/// errors that name it, a profile only for an existing sign-in account, ids that never change.
/// SECURITY DEFINER (sql/identity.sql): it looks at usernames and accounts the caller cannot see.
#[pg_trigger]
fn check_profile<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::datum::TryFromDatumError> {
    let Some(new) = trigger.new() else {
        errors::invalid_parameter("check_profile() must be a row-level INSERT or UPDATE trigger")
    };
    if backup::restore_in_progress() {
        return Ok(Some(new));
    }
    let id: Uuid = errors::required(new.get_by_name::<Uuid>("id")?, "users.id");
    let username: Option<String> = new.get_by_name("username")?;
    let old = trigger.old();
    if let Some(old) = &old {
        if old.get_by_name::<Uuid>("id")? != Some(id) {
            errors::insufficient_privilege("users.id cannot change: it is the auth account's id");
        }
    }
    let username_changed = match &old {
        Some(old) => old.get_by_name::<String>("username")? != username,
        None => true,
    };
    Spi::connect(|client| {
        if old.is_none() && !auth_account_exists(client, id) {
            errors::raise(
                pgrx::PgSqlErrorCode::ERRCODE_FOREIGN_KEY_VIOLATION,
                format!("no auth account {id}: a profile belongs to a row of auth.users"),
            );
        }
        if let (Some(username), true) = (username.as_deref(), username_changed) {
            match names::check_new_username(username) {
                Err(Refusal::Malformed) => errors::invalid_parameter(format!(
                    "username \"{username}\" is not valid: use {}",
                    names::USERNAME_RULE
                )),
                Err(Refusal::Reserved) => {
                    errors::invalid_parameter(format!("username \"{username}\" is reserved"))
                }
                Ok(()) => {}
            }
            if old.is_some() && is_anonymous(client, id) {
                errors::insufficient_privilege(
                    "anonymous users cannot claim a username: sign up with a permanent account first",
                );
            }
            if username_taken(client, username, Some(id)) {
                errors::unique_violation(format!("username \"{username}\" is already taken"));
            }
        }
    });
    Ok(Some(new))
}

static AUTH_ACCOUNT_EXISTS: Statement = Statement::read(
    // KEY SHARE, like the foreign key it replaces: the account cannot go away before we commit.
    "SELECT EXISTS (SELECT 1 FROM auth.users a WHERE a.id = $1 FOR KEY SHARE)",
    &[types::UUID],
);

fn auth_account_exists(client: &SpiClient<'_>, id: Uuid) -> bool {
    spi::one::<bool>(
        client,
        &AUTH_ACCOUNT_EXISTS,
        &[id.into()],
        "looking up the auth account",
    )
    .unwrap_or(false)
}

static IS_ANONYMOUS: Statement = Statement::read(
    "SELECT coalesce((SELECT is_anonymous FROM users WHERE id = $1), false)",
    &[types::UUID],
);

/// Whether the profile belongs to an anonymous sign-in (Supabase's `is_anonymous`).
pub fn is_anonymous(client: &SpiClient<'_>, id: Uuid) -> bool {
    spi::one::<bool>(client, &IS_ANONYMOUS, &[id.into()], "reading the profile").unwrap_or(false)
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
        if spi::run(
            client,
            &MARK_ONBOARDED,
            &[user_id.into()],
            "marking onboarding complete",
        ) == 0
        {
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

    use super::ProfileHints;

    fn signup(id: &str, email: &str, meta: &str) {
        Spi::run(&format!(
            "INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES ('{id}', '{email}', '{meta}')"
        ))
        .unwrap();
    }

    fn as_user(id: &str) {
        Spi::run("SET LOCAL ROLE authenticated").unwrap();
        Spi::run(&format!(
            "SELECT set_config('request.jwt.claims', '{{\"sub\":\"{id}\"}}', true)"
        ))
        .unwrap();
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[pg_test]
    fn provider_metadata_maps_to_a_profile() {
        let github = ProfileHints::from_metadata(&pairs(&[
            ("user_name", "mona-lisa"),
            ("avatar_url", "https://a.example/m.png"),
        ]));
        assert_eq!(github.username.as_deref(), Some("mona_lisa"));
        assert_eq!(github.display_name.as_deref(), Some("mona-lisa"));
        let google = ProfileHints::from_metadata(&pairs(&[
            ("given_name", "Ada"),
            ("family_name", "Lovelace"),
            ("picture", "https://a.example/a.png"),
        ]));
        assert_eq!(google.display_name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(
            google.avatar_url.as_deref(),
            Some("https://a.example/a.png")
        );
        assert_eq!(google.username, None);
        let azure =
            ProfileHints::from_metadata(&pairs(&[("preferred_username", "ada@contoso.com")]));
        assert_eq!(azure.username, None);
        assert_eq!(azure.display_name, None);
        let discord = ProfileHints::from_metadata(&pairs(&[("custom_claims.global_name", "Zoë")]));
        assert_eq!(discord.display_name.as_deref(), Some("Zoë"));
    }

    #[pg_test]
    fn username_availability_is_case_insensitive() {
        signup(
            "00000000-0000-0000-0000-000000000011",
            "ada@example.com",
            r#"{"username":"Ada_L"}"#,
        );
        for (name, free) in [
            ("ada_l", false),
            ("ADA_L", false),
            ("grace", true),
            ("root", false),
            ("invite", false),
            ("x' OR 1=1 --", false),
        ] {
            assert_eq!(
                Spi::get_one_with_args::<bool>(
                    "SELECT check_username_available($1)",
                    &[name.into()]
                )
                .unwrap(),
                Some(free),
                "{name}"
            );
        }
        assert_eq!(
            Spi::get_one::<bool>("SELECT check_username_available(NULL)").unwrap(),
            Some(false)
        );
    }

    #[pg_test(error = "username \"ADMIN\" is reserved")]
    fn a_reserved_username_names_the_rule() {
        signup(
            "00000000-0000-0000-0000-000000000012",
            "r@example.com",
            "{}",
        );
        as_user("00000000-0000-0000-0000-000000000012");
        Spi::run(
            "UPDATE users SET username = 'ADMIN' WHERE id = '00000000-0000-0000-0000-000000000012'",
        )
        .unwrap();
    }

    #[pg_test(
        error = "username \"no spaces\" is not valid: use 3 to 30 letters, digits or underscores"
    )]
    fn a_malformed_username_names_the_rule() {
        signup(
            "00000000-0000-0000-0000-000000000013",
            "m@example.com",
            "{}",
        );
        as_user("00000000-0000-0000-0000-000000000013");
        Spi::run("UPDATE users SET username = 'no spaces' WHERE id = '00000000-0000-0000-0000-000000000013'").unwrap();
    }

    #[pg_test(error = "username \"taken\" is already taken")]
    fn a_taken_username_names_the_rule() {
        signup(
            "00000000-0000-0000-0000-000000000014",
            "t1@example.com",
            r#"{"username":"Taken"}"#,
        );
        signup(
            "00000000-0000-0000-0000-000000000015",
            "t2@example.com",
            "{}",
        );
        as_user("00000000-0000-0000-0000-000000000015");
        Spi::run(
            "UPDATE users SET username = 'taken' WHERE id = '00000000-0000-0000-0000-000000000015'",
        )
        .unwrap();
    }

    #[pg_test]
    fn keeping_your_own_username_in_another_case_is_fine() {
        signup(
            "00000000-0000-0000-0000-000000000016",
            "k@example.com",
            r#"{"username":"keeper"}"#,
        );
        as_user("00000000-0000-0000-0000-000000000016");
        Spi::run("UPDATE users SET username = 'Keeper' WHERE id = '00000000-0000-0000-0000-000000000016'").unwrap();
        Spi::run("RESET ROLE").unwrap();
        assert_eq!(
            Spi::get_one::<String>(
                "SELECT username FROM users WHERE id = '00000000-0000-0000-0000-000000000016'"
            )
            .unwrap()
            .as_deref(),
            Some("Keeper")
        );
    }

    #[pg_test(
        error = "no auth account 00000000-0000-0000-0000-000000000099: a profile belongs to a row of auth.users"
    )]
    fn a_profile_needs_an_auth_account() {
        Spi::run("INSERT INTO users (id) VALUES ('00000000-0000-0000-0000-000000000099')").unwrap();
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
        as_user("00000000-0000-0000-0000-000000000061");
        Spi::run("SELECT complete_onboarding('00000000-0000-0000-0000-000000000061')").unwrap();
        Spi::run("RESET ROLE").unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM users WHERE onboarding_completed AND onboarding_completed_at IS NOT NULL AND id = '00000000-0000-0000-0000-000000000061'").unwrap(),
            Some(1)
        );
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM users WHERE onboarding_completed AND id = '00000000-0000-0000-0000-000000000062'").unwrap(),
            Some(0)
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
        as_user("00000000-0000-0000-0000-000000000071");
        Spi::run("SELECT complete_onboarding('00000000-0000-0000-0000-000000000072')").unwrap();
    }

    #[pg_test(error = "user_id must not be NULL")]
    fn complete_onboarding_rejects_null() {
        Spi::run("SELECT complete_onboarding(NULL)").unwrap();
    }
}
