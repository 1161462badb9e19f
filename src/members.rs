//! Member management RPCs (sql/members.sql): what an app needs for a members page. Each is
//! SECURITY DEFINER, takes the caller from the JWT, and enforces its rule itself: every refusal
//! is an error with a SQLSTATE, never "0 rows".
//!
//! The hierarchy, in one place (`roles::manage_refusal`, `roles::may_grant`), for the RPCs and
//! for direct writes (the membership policies call `may_manage_member`): nobody hands out a
//! role ranked above their own; only owners touch owners; others manage only members ranked
//! below them. The
//! organization's owner (`owner_id`) stays an owner until `transfer_ownership`
//! (organizations.rs), so the last owner can neither leave nor be demoted.
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::Uuid;

use crate::auth_context;
use crate::errors;
use crate::roles::{self, Access};
use crate::spi::{self, types, Expect, Statement};

pgrx::extension_sql_file!(
    "../sql/members.sql",
    name = "members",
    requires = [
        "roles",
        "entitlements",
        signed_in_user,
        organization_id_by_slug,
        require_membership,
        may_manage_member,
        update_member_role,
        remove_member,
        leave_organization,
        delete_organization,
    ]
);

/// The caller as a signed-in user, or 42501.
pub fn signed_in(client: &SpiClient<'_>, action: &str) -> Uuid {
    auth_context::current_uid(client)
        .unwrap_or_else(|| errors::insufficient_privilege(format!("{action}: not authenticated")))
}

/// What the caller may do in `org`. Non-members get the same 42501 whether or not the
/// organization exists; the service role (acting as no member) gets 22023 for a missing one.
pub fn caller_access(client: &SpiClient<'_>, org: Uuid, action: &str) -> Access {
    let service = auth_context::caller_is_service_role();
    let caller = auth_context::current_uid(client);
    let access = match caller {
        Some(uid) => Access::of(client, org, uid),
        None => Access::none(),
    };
    if access.is_member() {
        return access;
    }
    if service {
        if !organization_exists(client, org) {
            errors::invalid_parameter(format!("{action}: no organization {org}"));
        }
        return Access::service();
    }
    if caller.is_none() {
        errors::insufficient_privilege(format!("{action}: not authenticated"));
    }
    errors::insufficient_privilege(format!(
        "{action}: you are not a member of this organization (or it does not exist)"
    ))
}

static ORG_EXISTS: Statement = Statement::read(
    "SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1)",
    &[types::UUID],
);

fn organization_exists(client: &SpiClient<'_>, org: Uuid) -> bool {
    spi::one::<bool>(
        client,
        &ORG_EXISTS,
        &[org.into()],
        "reading the organization",
    )
    .unwrap_or(false)
}

/// Refuses unless the caller (`access`) may change the membership of someone ranked
/// `target_rank` (`roles::manage_refusal`).
fn require_may_manage(access: &Access, target_rank: i32, action: &str) {
    if let Some(why) = roles::manage_refusal(access, target_rank) {
        errors::insufficient_privilege(format!("{action}: {why}"));
    }
}

/// For the membership policies (sql/members.sql): whether the caller's role grants
/// `permission` in `org_id`, lets them touch a member holding `current_role` (if given) and
/// hand out `new_role` (if given). The same rule the RPCs apply, answering instead of raising.
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn may_manage_member(
    org_id: Option<Uuid>,
    permission: Option<&str>,
    current_role: Option<&str>,
    new_role: Option<&str>,
) -> bool {
    let (Some(org), Some(permission)) = (org_id, permission) else {
        return false;
    };
    Spi::connect(|client| {
        let Some(caller) = auth_context::current_uid(client) else {
            return false;
        };
        let access = Access::of(client, org, caller);
        if !access.is_member() || !access.has(permission) {
            return false;
        }
        let touches = current_role.is_none_or(|role| {
            roles::rank_of(client, org, role)
                .is_some_and(|rank| roles::manage_refusal(&access, rank).is_none())
        });
        let grants = new_role.is_none_or(|role| {
            roles::rank_of(client, org, role).is_some_and(|rank| roles::may_grant(&access, rank))
        });
        touches && grants
    })
}

/// The caller's user id, or 42501 for an anonymous caller: the guard of
/// `get_my_organizations` (sql/members.sql).
#[pg_extern(stable)]
fn signed_in_user(action: Option<&str>) -> Uuid {
    let action = errors::required(action, "action");
    Spi::connect(|client| signed_in(client, action))
}

static ORGANIZATION_ID_BY_SLUG: Statement = Statement::read(
    "SELECT id FROM organizations WHERE slug = $1",
    &[types::TEXT],
);

/// The organization with `slug`, if the caller may read it: the guard of
/// `get_organization_by_slug` (sql/members.sql). A missing slug and a foreign one get the same
/// 42501; the service role gets 22023 for a missing one.
#[pg_extern(stable)]
fn organization_id_by_slug(slug: Option<&str>, action: Option<&str>) -> Uuid {
    let slug = errors::required(slug, "slug");
    let action = errors::required(action, "action");
    Spi::connect(|client| {
        let org = spi::one::<Uuid>(
            client,
            &ORGANIZATION_ID_BY_SLUG,
            &[slug.into()],
            "reading the organization",
        );
        match org {
            Some(org) => {
                caller_access(client, org, action);
                org
            }
            None if auth_context::caller_is_service_role() => {
                errors::invalid_parameter(format!("{action}: no organization \"{slug}\""))
            }
            None => errors::insufficient_privilege(format!(
                "{action}: you are not a member of this organization (or it does not exist)"
            )),
        }
    })
}

/// The access check of `get_organization` and `get_organization_members` (sql/members.sql):
/// the RPCs that return rows are queries behind a Rust guard, so that their rows reach the
/// caller without being converted to Rust values and back (measured: the conversion of 5,000
/// members cost more than the query). True, or an error as `caller_access` raises it.
#[pg_extern(stable)]
fn require_membership(org_id: Option<Uuid>, action: Option<&str>) -> bool {
    let org = errors::required(org_id, "org_id");
    let action = errors::required(action, "action");
    Spi::connect(|client| {
        caller_access(client, org, action);
    });
    true
}

static MEMBER_FOR_UPDATE: Statement = Statement::write(
    "SELECT mr.role, mr.hierarchy_level, o.is_personal, o.owner_id
     FROM organizations o
     JOIN organization_members m ON m.organization_id = o.id AND m.user_id = $2
     JOIN member_roles mr ON mr.organization_id = m.organization_id AND mr.user_id = m.user_id
     WHERE o.id = $1
     FOR UPDATE OF m",
    &[types::UUID, types::UUID],
);

struct Target {
    role: String,
    rank: i32,
    is_personal: bool,
    is_owner_of_record: bool,
}

/// Locks and reads `user`'s membership of `org`; 22023 when they are not a member.
fn target_member(client: &mut SpiClient<'_>, org: Uuid, user: Uuid, action: &str) -> Target {
    let what = "reading the member";
    let table = client
        .update(
            MEMBER_FOR_UPDATE.prepared(client),
            Some(1),
            &[org.into(), user.into()],
        )
        .or_fail(what);
    if table.is_empty() {
        errors::invalid_parameter(format!(
            "{action}: {user} is not a member of this organization"
        ));
    }
    let row = table.first();
    Target {
        role: row.get(1).or_fail(what).unwrap_or_default(),
        rank: row.get(2).or_fail(what).unwrap_or(0),
        is_personal: row.get(3).or_fail(what).unwrap_or(false),
        is_owner_of_record: row.get::<Uuid>(4).or_fail(what) == Some(user),
    }
}

static SET_MEMBER_ROLE: Statement = Statement::write(
    "UPDATE organization_members SET role = $3 WHERE organization_id = $1 AND user_id = $2",
    &[types::UUID, types::UUID, types::TEXT],
);

static DELETE_MEMBER: Statement = Statement::write(
    "DELETE FROM organization_members WHERE organization_id = $1 AND user_id = $2",
    &[types::UUID, types::UUID],
);

fn refuse_owner_of_record(target: &Target, action: &str, what: &str) {
    if target.is_owner_of_record {
        errors::not_in_prerequisite_state(
            format!("{action}: the organization's owner {what}"),
            "Transfer ownership first: SELECT transfer_ownership(org_id, new_owner).",
        );
    }
}

/// Gives a member another role (a system role or one of the organization's custom roles).
/// Needs `members.change_role`; nobody changes their own role.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn update_member_role(org_id: Option<Uuid>, user_id: Option<Uuid>, role: Option<&str>) {
    let org = errors::required(org_id, "org_id");
    let user = errors::required(user_id, "user_id");
    let role = errors::required(role, "role");
    let action = "update_member_role";
    Spi::connect_mut(|client| {
        let access = caller_access(client, org, action);
        access.require("members.change_role", action);
        if auth_context::current_uid(client) == Some(user) {
            errors::insufficient_privilege(format!("{action}: nobody changes their own role"));
        }
        let target = target_member(client, org, user, action);
        require_may_manage(&access, target.rank, action);
        roles::require_grantable(client, &access, org, role, action);
        if target.role == role {
            return;
        }
        refuse_owner_of_record(&target, action, "keeps the role owner");
        spi::run(
            client,
            &SET_MEMBER_ROLE,
            &[org.into(), user.into(), role.into()],
            "changing the role",
        );
    })
}

/// Removes a member. Needs `members.remove`; to remove yourself, `leave_organization`.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn remove_member(org_id: Option<Uuid>, user_id: Option<Uuid>) {
    let org = errors::required(org_id, "org_id");
    let user = errors::required(user_id, "user_id");
    let action = "remove_member";
    Spi::connect_mut(|client| {
        let access = caller_access(client, org, action);
        access.require("members.remove", action);
        if auth_context::current_uid(client) == Some(user) {
            errors::invalid_parameter(format!(
                "{action}: to remove yourself, call leave_organization(org_id)"
            ));
        }
        let target = target_member(client, org, user, action);
        require_may_manage(&access, target.rank, action);
        refuse_owner_of_record(&target, action, "cannot be removed");
        spi::run(
            client,
            &DELETE_MEMBER,
            &[org.into(), user.into()],
            "removing the member",
        );
    })
}

/// The caller leaves a team organization. The owner transfers ownership first.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn leave_organization(org_id: Option<Uuid>) {
    let org = errors::required(org_id, "org_id");
    let action = "leave_organization";
    Spi::connect_mut(|client| {
        let caller = signed_in(client, action);
        caller_access(client, org, action);
        let target = target_member(client, org, caller, action);
        if target.is_personal {
            errors::invalid_parameter(format!(
                "{action}: a personal organization belongs to its user"
            ));
        }
        refuse_owner_of_record(&target, action, "cannot leave");
        spi::run(
            client,
            &DELETE_MEMBER,
            &[org.into(), caller.into()],
            "leaving the organization",
        );
    })
}

static LOCK_ORGANIZATION: Statement = Statement::write(
    "SELECT is_personal FROM organizations WHERE id = $1 FOR UPDATE",
    &[types::UUID],
);

static DELETE_ORGANIZATION: Statement =
    Statement::write("DELETE FROM organizations WHERE id = $1", &[types::UUID]);

/// Deletes a team organization with everything in it. Needs `org.delete`.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn delete_organization(org_id: Option<Uuid>) {
    let org = errors::required(org_id, "org_id");
    let action = "delete_organization";
    Spi::connect_mut(|client| {
        let access = caller_access(client, org, action);
        access.require("org.delete", action);
        let personal = spi::one_mut::<bool>(
            client,
            &LOCK_ORGANIZATION,
            &[org.into()],
            "reading the organization",
        )
        .unwrap_or(false);
        if personal {
            errors::invalid_parameter(format!(
                "{action}: a personal organization goes with its user's account"
            ));
        }
        spi::run(
            client,
            &DELETE_ORGANIZATION,
            &[org.into()],
            "deleting the organization",
        );
    })
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::testing::{claims_of, error_of};
    use pgrx::prelude::*;

    const OWNER: &str = "00000000-0000-0000-0000-0000000000f1";
    const ADMIN: &str = "00000000-0000-0000-0000-0000000000f2";
    const ADMIN2: &str = "00000000-0000-0000-0000-0000000000f5";
    const MEMBER: &str = "00000000-0000-0000-0000-0000000000f3";
    const OUTSIDER: &str = "00000000-0000-0000-0000-0000000000f4";

    /// A business team with an owner, two admins and a member; the caller is the owner.
    fn team() -> String {
        Spi::run(&format!(
            "INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES
               ('{OWNER}', 'owner-f@example.com', '{{\"full_name\":\"Olga Owner\"}}'),
               ('{ADMIN}', 'admin-f@example.com', '{{}}'), ('{ADMIN2}', 'admin2-f@example.com', '{{}}'),
               ('{MEMBER}', 'member-f@example.com', '{{}}'), ('{OUTSIDER}', 'x-f@example.com', '{{}}')"
        ))
        .unwrap();
        claims_of(OWNER);
        let org = Spi::get_one::<pgrx::Uuid>("SELECT create_organization('Foxtrot', 'business')")
            .unwrap()
            .unwrap();
        Spi::run(&format!(
            "UPDATE org_subscriptions SET plan = 'business' WHERE organization_id = '{org}';
             INSERT INTO organization_members (organization_id, user_id, role) VALUES
               ('{org}', '{ADMIN}', 'admin'), ('{org}', '{ADMIN2}', 'admin'), ('{org}', '{MEMBER}', 'member')"
        ))
        .unwrap();
        org.to_string()
    }

    fn role_of(org: &str, user: &str) -> Option<String> {
        Spi::get_one::<String>(&format!(
            "SELECT (SELECT role FROM organization_members WHERE organization_id = '{org}' AND user_id = '{user}')"
        ))
        .unwrap()
    }

    #[pg_test]
    fn a_member_lists_the_team_with_emails_and_an_outsider_cannot() {
        let org = team();
        claims_of(MEMBER);
        let emails = Spi::get_one::<String>(&format!(
            "SELECT string_agg(email || ':' || role, ',' ORDER BY role_rank DESC, email) FROM get_organization_members('{org}')"
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            emails,
            "owner-f@example.com:owner,admin-f@example.com:admin,admin2-f@example.com:admin,member-f@example.com:member"
        );
        let mine = Spi::get_one::<String>(
            "SELECT string_agg(role || '/' || plan || '/' || member_count, ',' ORDER BY is_personal DESC) FROM get_my_organizations()",
        )
        .unwrap()
        .unwrap();
        assert_eq!(mine, "owner/free/1,member/business/4");
        Spi::run("SET LOCAL ROLE authenticated").unwrap();
        claims_of(OUTSIDER);
        let refused = error_of(&format!("SELECT * FROM get_organization_members('{org}')"));
        assert!(refused.is_some_and(|e| e.contains("not a member of this organization")));
    }

    #[pg_test]
    fn admins_manage_members_below_them_only() {
        let org = team();
        claims_of(ADMIN);
        Spi::run(&format!(
            "SELECT update_member_role('{org}', '{MEMBER}', 'viewer')"
        ))
        .unwrap();
        assert_eq!(role_of(&org, MEMBER).as_deref(), Some("viewer"));
        // Not a peer, not above oneself, not an owner.
        for attempt in [
            format!("SELECT update_member_role('{org}', '{ADMIN2}', 'member')"),
            format!("SELECT update_member_role('{org}', '{MEMBER}', 'owner')"),
            format!("SELECT remove_member('{org}', '{OWNER}')"),
            format!("SELECT update_member_role('{org}', '{ADMIN}', 'owner')"),
        ] {
            assert!(
                error_of(&attempt).is_some_and(|e| e.starts_with("42501:")),
                "{attempt} should have been refused"
            );
        }
        assert_eq!(role_of(&org, ADMIN2).as_deref(), Some("admin"));
        Spi::run(&format!("SELECT remove_member('{org}', '{MEMBER}')")).unwrap();
        assert_eq!(role_of(&org, MEMBER), None);
    }

    #[pg_test]
    #[should_panic(expected = "the organization's owner cannot leave")]
    fn the_owner_cannot_leave() {
        let org = team();
        Spi::run(&format!("SELECT leave_organization('{org}')")).unwrap();
    }

    #[pg_test]
    fn members_leave_and_owners_delete() {
        let org = team();
        claims_of(MEMBER);
        Spi::run(&format!("SELECT leave_organization('{org}')")).unwrap();
        assert_eq!(role_of(&org, MEMBER), None);
        claims_of(ADMIN);
        assert!(error_of(&format!("SELECT delete_organization('{org}')"))
            .is_some_and(|e| e.contains("requires the permission org.delete")));
        claims_of(OWNER);
        Spi::run(&format!("SELECT delete_organization('{org}')")).unwrap();
        assert_eq!(
            Spi::get_one::<i64>(&format!(
                "SELECT count(*) FROM organizations WHERE id = '{org}'"
            ))
            .unwrap(),
            Some(0)
        );
    }

    #[pg_test]
    #[should_panic(expected = "requires the permission members.remove")]
    fn members_cannot_remove() {
        let org = team();
        claims_of(MEMBER);
        Spi::run(&format!("SELECT remove_member('{org}', '{ADMIN}')")).unwrap();
    }
}
