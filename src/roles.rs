//! Roles and permissions as data (sql/roles.sql): what a member's role allows, who outranks
//! whom, and platform roles granted for a time.
//!
//! A role key is resolved to a role in one place (the `member_roles` view) and a platform
//! grant's expiry is applied in one place (`active_user_roles`); the checks here, the RPCs of
//! `members` and `invitations`, and the policies all read through them.
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::Uuid;

use crate::backup;
use crate::errors;
use crate::spi::{self, types, Expect, Statement};

pgrx::extension_sql_file!(
    "../sql/roles.sql",
    name = "roles",
    requires = [
        "organizations",
        has_permission,
        check_role,
        check_member_role
    ]
);

/// The owner's rank: owners touch owners, and may grant every role.
pub const OWNER_RANK: i32 = 100;

static ACCESS: Statement = Statement::read(
    "SELECT mr.role, mr.hierarchy_level,
            ARRAY(SELECT rp.permission FROM role_permissions rp WHERE rp.role_id = mr.role_id
                  UNION
                  SELECT rp.permission FROM active_user_roles ur
                  JOIN role_permissions rp ON rp.role_id = ur.role_id
                  WHERE ur.user_id = $2)
     FROM (SELECT) AS one
     LEFT JOIN member_roles mr ON mr.organization_id = $1 AND mr.user_id = $2",
    &[types::UUID, types::UUID],
);

/// What a user may do in an organization: their role there (if a member), its rank, and the
/// permissions their role and their unexpired platform roles grant; or that the caller acts as
/// the service role (not a member), which may do everything the hierarchy allows anyone.
pub struct Access {
    pub role: Option<String>,
    pub rank: Option<i32>,
    permissions: Vec<String>,
    service: bool,
}

impl Access {
    pub fn of(client: &SpiClient<'_>, org: Uuid, user: Uuid) -> Access {
        let what = "reading the caller's role";
        let table = client
            .select(ACCESS.prepared(client), Some(1), &[org.into(), user.into()])
            .or_fail(what);
        let row = table.first();
        Access {
            role: row.get(1).or_fail(what),
            rank: row.get(2).or_fail(what),
            permissions: row.get::<Vec<String>>(3).or_fail(what).unwrap_or_default(),
            service: false,
        }
    }

    /// No membership and no permission (an anonymous caller).
    pub fn none() -> Access {
        Access {
            role: None,
            rank: None,
            permissions: Vec::new(),
            service: false,
        }
    }

    /// The service role acting for the organization, not as a member (`caller_access`
    /// decides): every permission, and the hierarchy lets it touch anyone.
    pub fn service() -> Access {
        Access {
            service: true,
            ..Access::none()
        }
    }

    pub fn is_member(&self) -> bool {
        self.role.is_some()
    }

    /// Whether `permission` is granted (always, to the service role).
    pub fn has(&self, permission: &str) -> bool {
        self.service || self.permissions.iter().any(|p| p == permission)
    }

    pub fn is_owner(&self) -> bool {
        self.rank == Some(OWNER_RANK)
    }

    /// Refuses with 42501 unless the role grants `permission`.
    pub fn require(&self, permission: &str, action: &str) {
        if !self.has(permission) {
            errors::insufficient_privilege(format!(
                "{action}: requires the permission {permission} in this organization"
            ));
        }
    }
}

static ROLE_RANK: Statement = Statement::read(
    "SELECT r.hierarchy_level FROM roles r
     WHERE r.key = $2 AND r.scope = 'organization'
       AND (r.organization_id IS NULL OR r.organization_id = $1)",
    &[types::UUID, types::TEXT],
);

/// The rank of the role `key` in `org` (a system role or one of its custom roles), if it exists.
pub fn rank_of(client: &SpiClient<'_>, org: Uuid, key: &str) -> Option<i32> {
    spi::one::<i32>(
        client,
        &ROLE_RANK,
        &[org.into(), key.into()],
        "reading the role",
    )
}

/// The hierarchy, in one place (the RPCs raise these as 42501, the membership policies call
/// `may_manage_member`): why a caller may not touch a member ranked `target`, if they may
/// not. Owners (and the service role) touch anyone; others only those ranked below them.
pub fn manage_refusal(access: &Access, target: i32) -> Option<&'static str> {
    if access.service || access.is_owner() {
        None
    } else if target >= OWNER_RANK {
        Some("only owners touch owners")
    } else if access.rank.is_none_or(|own| target >= own) {
        Some("you can only manage members ranked below you")
    } else {
        None
    }
}

/// Whether the caller may hand out a role ranked `rank`: nobody grants a role above their own.
pub fn may_grant(access: &Access, rank: i32) -> bool {
    access.service || access.rank.is_some_and(|own| rank <= own)
}

/// Refuses `role` as one the caller (`access`) may hand out in `org`: it must exist there and
/// rank no higher than the caller's own role (22023 / 42501).
pub fn require_grantable(
    client: &SpiClient<'_>,
    access: &Access,
    org: Uuid,
    role: &str,
    action: &str,
) -> i32 {
    let Some(rank) = rank_of(client, org, role) else {
        errors::invalid_parameter(format!(
            "{action}: there is no role \"{role}\" in this organization"
        ))
    };
    if !may_grant(access, rank) {
        errors::insufficient_privilege(format!(
            "{action}: the role \"{role}\" ranks above your own"
        ));
    }
    rank
}

static PERMITTED: Statement = Statement::read(
    "SELECT $1 IN (SELECT current_user_permitted_org_ids($2))",
    &[types::UUID, types::TEXT],
);

/// Whether the caller's role in `org_id` (or an unexpired platform role of theirs) grants
/// `permission`. Answers for the caller only: nobody probes another user's rights.
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn has_permission(org_id: Option<Uuid>, permission: Option<&str>) -> bool {
    let org = errors::required(org_id, "org_id");
    let permission = errors::required(permission, "permission");
    Spi::connect(|client| {
        spi::one::<bool>(
            client,
            &PERMITTED,
            &[org.into(), permission.into()],
            "checking a permission",
        )
        .unwrap_or(false)
    })
}

static GLOBAL_KEY_TAKEN: Statement = Statement::read(
    "SELECT EXISTS (SELECT 1 FROM roles WHERE key = $1 AND organization_id IS NULL AND id <> $2)",
    &[types::TEXT, types::UUID],
);

static CUSTOM_KEY_TAKEN: Statement = Statement::read(
    "SELECT EXISTS (SELECT 1 FROM roles WHERE key = $1 AND organization_id IS NOT NULL AND id <> $2)",
    &[types::TEXT, types::UUID],
);

// Members and pending invitations of an organization that still exists (when the organization
// itself goes, its custom roles go along with its members).
static ROLE_IN_USE: Statement = Statement::read(
    "SELECT EXISTS (SELECT 1 FROM organization_members m JOIN organizations o ON o.id = m.organization_id
                    WHERE m.organization_id = $1 AND m.role = $2)
         OR EXISTS (SELECT 1 FROM invitations i JOIN organizations o ON o.id = i.organization_id
                    WHERE i.organization_id = $1 AND i.role = $2 AND i.status = 'pending')",
    &[types::UUID, types::TEXT],
);

/// `check_role`: BEFORE INSERT OR UPDATE OR DELETE ON roles. A custom key never shadows a
/// system or platform key (nor the other way round); a role's key, scope and organization are
/// fixed; system roles keep their rank and stay; a custom role stays while someone holds it.
#[pg_trigger]
fn check_role<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::datum::TryFromDatumError> {
    if backup::restore_in_progress() {
        return Ok(trigger.new().or(trigger.old()));
    }
    let old = trigger.old();
    let new = trigger.new();
    Spi::connect(|client| -> Result<(), pgrx::datum::TryFromDatumError> {
        if let Some(new) = &new {
            let id: Uuid = errors::required(new.get_by_name("id")?, "id");
            let key: String = errors::required(new.get_by_name("key")?, "key");
            let org: Option<Uuid> = new.get_by_name("organization_id")?;
            let statement = if org.is_some() {
                &GLOBAL_KEY_TAKEN
            } else {
                &CUSTOM_KEY_TAKEN
            };
            let taken = spi::one::<bool>(
                client,
                statement,
                &[key.as_str().into(), id.into()],
                "checking the role",
            )
            .unwrap_or(false);
            if taken {
                errors::unique_violation(format!(
                    "the role key \"{key}\" is taken by a {} role",
                    if org.is_some() {
                        "system or platform"
                    } else {
                        "custom"
                    }
                ));
            }
        }
        if let Some(old) = &old {
            let key: String = errors::required(old.get_by_name("key")?, "key");
            let system: bool = old.get_by_name("is_system")?.unwrap_or(false);
            let org: Option<Uuid> = old.get_by_name("organization_id")?;
            match &new {
                Some(new) => {
                    let fixed = new.get_by_name::<String>("key")?.as_deref() == Some(key.as_str())
                        && new.get_by_name::<String>("scope")? == old.get_by_name("scope")?
                        && new.get_by_name::<Uuid>("organization_id")? == org
                        && new.get_by_name::<bool>("is_system")? == Some(system);
                    if !fixed {
                        errors::invalid_parameter(
                            "a role's key, scope, organization and system flag are fixed once created",
                        );
                    }
                    if system
                        && new.get_by_name::<i32>("hierarchy_level")?
                            != old.get_by_name("hierarchy_level")?
                    {
                        errors::insufficient_privilege(format!(
                            "the system role \"{key}\" keeps its rank"
                        ));
                    }
                }
                None => {
                    if system {
                        errors::insufficient_privilege(format!(
                            "the system role \"{key}\" cannot be deleted"
                        ));
                    }
                    if let Some(org) = org {
                        let in_use = spi::one::<bool>(
                            client,
                            &ROLE_IN_USE,
                            &[org.into(), key.as_str().into()],
                            "checking the role",
                        )
                        .unwrap_or(false);
                        if in_use {
                            errors::raise_with_hint(
                                PgSqlErrorCode::ERRCODE_FOREIGN_KEY_VIOLATION,
                                format!("the role \"{key}\" is held by members or pending invitations"),
                                "Give those members another role (update_member_role) and revoke the invitations first.",
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    })?;
    Ok(new.or(old))
}

/// `check_member_role`: BEFORE INSERT OR UPDATE OF role, organization_id ON
/// organization_members. The role exists for the member's organization (23503 otherwise).
#[pg_trigger]
fn check_member_role<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::datum::TryFromDatumError> {
    let Some(new) = trigger.new() else {
        errors::invalid_parameter(
            "check_member_role() must be a row-level INSERT or UPDATE trigger",
        )
    };
    if backup::restore_in_progress() {
        return Ok(Some(new));
    }
    let org: Uuid = errors::required(new.get_by_name("organization_id")?, "organization_id");
    let role: String = errors::required(new.get_by_name("role")?, "role");
    let exists = Spi::connect(|client| rank_of(client, org, &role).is_some());
    if !exists {
        errors::raise_with_hint(
            PgSqlErrorCode::ERRCODE_FOREIGN_KEY_VIOLATION,
            format!("there is no role \"{role}\" in this organization"),
            "Use a system role (owner, admin, member, viewer) or one of the organization's custom roles.",
        );
    }
    Ok(Some(new))
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::testing::{claims_of, error_of};
    use pgrx::prelude::*;

    const OWNER: &str = "00000000-0000-0000-0000-0000000000e1";
    const ADMIN: &str = "00000000-0000-0000-0000-0000000000e2";
    const MEMBER: &str = "00000000-0000-0000-0000-0000000000e3";

    fn team() -> String {
        Spi::run(&format!(
            "INSERT INTO auth.users (id, email) VALUES
               ('{OWNER}', 'owner-e@example.com'), ('{ADMIN}', 'admin-e@example.com'),
               ('{MEMBER}', 'member-e@example.com')"
        ))
        .unwrap();
        let org = Spi::get_one::<pgrx::Uuid>(&format!(
            "INSERT INTO organizations (name, slug, owner_id) VALUES ('E', 'team-e', '{OWNER}') RETURNING id"
        ))
        .unwrap()
        .unwrap();
        Spi::run(&format!(
            "INSERT INTO org_subscriptions (organization_id, plan) VALUES ('{org}', 'business');
             INSERT INTO organization_members (organization_id, user_id, role) VALUES
               ('{org}', '{OWNER}', 'owner'), ('{org}', '{ADMIN}', 'admin'), ('{org}', '{MEMBER}', 'member')"
        ))
        .unwrap();
        org.to_string()
    }

    fn has(org: &str, permission: &str) -> bool {
        Spi::get_one::<bool>(&format!("SELECT has_permission('{org}', '{permission}')"))
            .unwrap()
            .unwrap()
    }

    #[pg_test]
    fn permissions_follow_the_role_and_answer_for_the_caller_only() {
        let org = team();
        claims_of(OWNER);
        assert!(has(&org, "org.delete"));
        claims_of(ADMIN);
        assert!(has(&org, "members.invite"));
        assert!(!has(&org, "org.delete"));
        claims_of(MEMBER);
        assert!(!has(&org, "members.invite"));
        // Data, not code: granting the permission to the member role changes the answer.
        Spi::run("INSERT INTO role_permissions (role_id, permission) SELECT id, 'members.invite' FROM roles WHERE key = 'member'").unwrap();
        assert!(has(&org, "members.invite"));
    }

    #[pg_test]
    fn custom_roles_are_per_organization_and_cannot_shadow_system_keys() {
        let org = team();
        Spi::run(&format!(
            "INSERT INTO roles (organization_id, key, name, hierarchy_level) VALUES ('{org}', 'billing_clerk', 'Billing clerk', 30)"
        ))
        .unwrap();
        Spi::run(&format!(
            "UPDATE organization_members SET role = 'billing_clerk' WHERE organization_id = '{org}' AND user_id = '{MEMBER}'"
        ))
        .unwrap();
        let shadow = error_of(&format!(
            "INSERT INTO roles (organization_id, key, name, hierarchy_level) VALUES ('{org}', 'admin', 'Fake', 90)"
        ));
        assert!(shadow.is_some_and(|e| e.starts_with("23505:")));
        let in_use = error_of(&format!(
            "DELETE FROM roles WHERE organization_id = '{org}' AND key = 'billing_clerk'"
        ));
        assert!(in_use.is_some_and(|e| e.starts_with("23503:")));
        // Not held any more: it can go.
        Spi::run(&format!(
            "UPDATE organization_members SET role = 'member' WHERE organization_id = '{org}' AND user_id = '{MEMBER}';
             DELETE FROM roles WHERE organization_id = '{org}' AND key = 'billing_clerk'"
        ))
        .unwrap();
    }

    #[pg_test]
    #[should_panic(expected = "there is no role \"superuser\" in this organization")]
    fn unknown_member_roles_are_refused() {
        let org = team();
        Spi::run(&format!(
            "UPDATE organization_members SET role = 'superuser' WHERE organization_id = '{org}' AND user_id = '{MEMBER}'"
        ))
        .unwrap();
    }

    #[pg_test]
    fn an_expired_platform_grant_stops_granting_at_once() {
        let org = team();
        Spi::run(&format!(
            "INSERT INTO user_roles (user_id, role_id, assigned_at, expires_at)
             SELECT '{MEMBER}', id, statement_timestamp() - interval '1 hour', statement_timestamp() + interval '1 hour'
             FROM roles WHERE key = 'support'"
        ))
        .unwrap();
        claims_of(MEMBER);
        assert!(has(&org, "audit.read"));
        Spi::run(&format!(
            "UPDATE user_roles SET expires_at = statement_timestamp() - interval '1 second' WHERE user_id = '{MEMBER}'"
        ))
        .unwrap();
        assert!(!has(&org, "audit.read"));
    }

    #[pg_test]
    #[should_panic(expected = "the system role \"owner\" cannot be deleted")]
    fn system_roles_stay() {
        Spi::run("DELETE FROM roles WHERE key = 'owner'").unwrap();
    }
}
