//! Handles people and organizations are known by: usernames and slugs. Their shapes, the names
//! nobody may take, and how free text (a provider's login, an organization's name) becomes one.
//! The `users.username` CHECK, the profile and slug triggers, signup provisioning and
//! `create_organization` all ask here.
use pgrx::prelude::*;
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Names that belong to the product or its staff. Reserved as usernames and as slugs.
///
/// The list is part of the `users.username` CHECK constraint (through `is_valid_username`):
/// adding a name here would make existing rows fail that CHECK on their next update, so new
/// reservations go to `RESERVED_FOR_NEW_NAMES`, which is checked only when a name is chosen.
const RESERVED: &[&str] = &[
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

/// Reserved since 0.2.0, for names chosen from then on (existing rows keep theirs).
const RESERVED_FOR_NEW_NAMES: &[&str] = &["new", "invite", "invitations", "auth", "deleted"];

pub const USERNAME_MIN: usize = 3;
pub const USERNAME_MAX: usize = 30;
pub const SLUG_MIN: usize = 3;
pub const SLUG_MAX: usize = 63;
/// Room kept for "-xxxxxx" / "_xxxxxx" when a derived name has to be made unique.
const SUFFIX_ROOM: usize = 7;

/// Why a name cannot be taken. Its message names the rule.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Malformed,
    Reserved,
}

fn is_reserved(name: &str, strict: bool) -> bool {
    let lower = name.to_ascii_lowercase();
    RESERVED.contains(&lower.as_str())
        || (strict && RESERVED_FOR_NEW_NAMES.contains(&lower.as_str()))
}

fn username_shape_ok(username: &str) -> bool {
    (USERNAME_MIN..=USERNAME_MAX).contains(&username.len())
        && username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The username rule of the `users.username` CHECK: 3–30 characters of `[A-Za-z0-9_]`, not
/// reserved in any letter case.
pub fn username_rule_holds(username: &str) -> bool {
    username_shape_ok(username) && !is_reserved(username, false)
}

/// The rule for a username being chosen now (signup, profile edit): the CHECK's rule plus
/// the names reserved since.
pub fn check_new_username(username: &str) -> Result<(), Refusal> {
    if !username_shape_ok(username) {
        Err(Refusal::Malformed)
    } else if is_reserved(username, true) {
        Err(Refusal::Reserved)
    } else {
        Ok(())
    }
}

pub const USERNAME_RULE: &str = "3 to 30 letters, digits or underscores";
pub const SLUG_RULE: &str =
    "3 to 63 lowercase letters and digits, in words joined by single hyphens";

/// The slug shape of the `organizations.slug` CHECK: lowercase ASCII letters and digits in
/// words joined by single hyphens, 3–63 characters.
pub fn slug_shape_ok(slug: &str) -> bool {
    (SLUG_MIN..=SLUG_MAX).contains(&slug.len())
        && !slug.starts_with('-')
        && !slug.ends_with('-')
        && !slug.contains("--")
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The rule for a slug being chosen now: the shape, and not a reserved name.
pub fn check_new_slug(slug: &str) -> Result<(), Refusal> {
    if !slug_shape_ok(slug) {
        Err(Refusal::Malformed)
    } else if is_reserved(slug, true) {
        Err(Refusal::Reserved)
    } else {
        Ok(())
    }
}

/// Free text as ASCII words: accents dropped (`Zoë` → `Zoe`), anything else a separator.
fn ascii_words(text: &str) -> Vec<String> {
    let folded: String = text.nfkd().filter(|c| !is_combining_mark(*c)).collect();
    folded
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// A URL-safe slug from free text, shortened to leave room for a uniqueness suffix.
pub fn slugify(text: &str) -> String {
    let mut slug = String::new();
    for word in ascii_words(&text.to_lowercase()) {
        if slug.len() + word.len() + 1 > SLUG_MAX - SUFFIX_ROOM {
            let room = (SLUG_MAX - SUFFIX_ROOM).saturating_sub(slug.len() + 1);
            if slug.is_empty() {
                slug.push_str(&word[..SLUG_MAX - SUFFIX_ROOM]);
            } else if room > 0 {
                slug.push('-');
                slug.push_str(&word[..room]);
            }
            break;
        }
        if !slug.is_empty() {
            slug.push('-');
        }
        slug.push_str(&word);
    }
    if slug.len() < SLUG_MIN {
        slug = if slug.is_empty() {
            "workspace".into()
        } else {
            format!("{slug}-workspace")
        };
    }
    slug
}

/// A username from a provider's login or handle: `mona-lisa` → `mona_lisa`, `Zoë.K` → `Zoe_K`.
/// `None` when nothing usable remains (too short, or an email address, which is not a handle).
pub fn username_from_handle(handle: &str) -> Option<String> {
    if handle.contains('@') {
        return None;
    }
    let joined = ascii_words(handle).join("_");
    let mut username: String = joined.chars().take(USERNAME_MAX).collect();
    while username.ends_with('_') {
        username.pop();
    }
    username_shape_ok(&username).then_some(username)
}

/// `base` shortened so that `base` + "_xxxxxx" still fits the username length.
pub fn username_stem(base: &str) -> String {
    base.chars().take(USERNAME_MAX - SUFFIX_ROOM).collect()
}

/// Six random hex digits, to make a taken slug or username free.
pub fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..6].to_string()
}

/// The username rule, for the `users.username` CHECK constraint and for clients.
/// NULL means "no username", which the CHECK must accept.
#[pg_extern(immutable, parallel_safe)]
pub fn is_valid_username(username: Option<&str>) -> Option<bool> {
    Some(username_rule_holds(username?))
}

/// The slug shape, for the `organizations.slug` CHECK constraint and for clients.
#[pg_extern(immutable, parallel_safe)]
pub fn is_valid_slug(slug: Option<&str>) -> Option<bool> {
    Some(slug_shape_ok(slug?))
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use super::*;

    #[pg_test]
    fn username_rule() {
        assert!(username_rule_holds("ada_99"));
        assert!(!username_rule_holds("ab"));
        assert!(!username_rule_holds(&"a".repeat(31)));
        assert!(!username_rule_holds("has space"));
        assert!(!username_rule_holds("ADMIN"));
        assert!(!username_rule_holds("é_accent"));
        // Reserved since 0.2.0: refused when chosen, still valid for rows that have it.
        assert!(username_rule_holds("invite"));
        assert_eq!(check_new_username("Invite"), Err(Refusal::Reserved));
        assert_eq!(check_new_username("a-b-c"), Err(Refusal::Malformed));
        assert_eq!(check_new_username("grace"), Ok(()));
    }

    #[pg_test]
    fn provider_handles_become_usernames() {
        assert_eq!(
            username_from_handle("mona-lisa").as_deref(),
            Some("mona_lisa")
        );
        assert_eq!(username_from_handle("Zoë.K").as_deref(), Some("Zoe_K"));
        assert_eq!(username_from_handle("  --x--  "), None);
        assert_eq!(username_from_handle("ada@contoso.com"), None);
        assert_eq!(username_from_handle("李小龍"), None);
        let long = username_from_handle(&"word-".repeat(20)).unwrap();
        assert!(long.len() <= USERNAME_MAX && !long.ends_with('_'));
    }

    #[pg_test]
    fn slugs() {
        assert_eq!(slugify("Acme, Inc."), "acme-inc");
        assert_eq!(slugify("  --Ünïcode--  "), "unicode");
        assert_eq!(slugify("x"), "x-workspace");
        assert_eq!(slugify("!!!"), "workspace");
        assert!(slugify(&"long ".repeat(40)).len() <= SLUG_MAX - SUFFIX_ROOM);
        assert!(slugify(&"z".repeat(200)).len() <= SLUG_MAX - SUFFIX_ROOM);
        // Explicit slugs of the full documented length are fine; reserved ones are not.
        assert_eq!(check_new_slug(&"a".repeat(63)), Ok(()));
        assert_eq!(check_new_slug(&"a".repeat(64)), Err(Refusal::Malformed));
        assert_eq!(check_new_slug("admin"), Err(Refusal::Reserved));
        assert_eq!(check_new_slug("a--b"), Err(Refusal::Malformed));
        assert_eq!(check_new_slug("Acme"), Err(Refusal::Malformed));
    }
}
