//! The audit log (sql/audit.sql): every privileged change, recorded by the database in the
//! transaction that makes it, with its actor, before/after values and client address.
//!
//! `audit_changes` is one statement trigger for every audited table and event. It reads the
//! statement's transition tables (`old_rows`, `new_rows`) with one prepared INSERT … SELECT
//! per table and event, so a bulk change is one statement, and a statement that changed
//! nothing worth recording (a member count moving) writes nothing.
use std::net::IpAddr;

use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::trigger_support::PgTriggerOperation;
use pgrx::Uuid;

use crate::auth_context;
use crate::backup;
use crate::errors;
use crate::spi::{self, types, Expect, Statement};

pgrx::extension_sql_file!(
    "../sql/audit.sql",
    name = "audit",
    requires = ["invitations", "billing", audit_changes, refuse_audit_update]
);

/// Wraps the entries a statement produces — (organization_id, action, resource_type,
/// resource_id, resource_name, changes) — into the INSERT with the actor's columns.
macro_rules! audited {
    ($entries:literal) => {
        Statement::write(
            concat!(
                "INSERT INTO audit_log (organization_id, actor_id, actor_name, actor_role, ip_address,
                                        action, resource_type, resource_id, resource_name, changes)
                 SELECT e.organization_id, $1, $2, $3, $4::inet,
                        e.action, e.resource_type, e.resource_id, e.resource_name, e.changes
                 FROM (",
                $entries,
                ") AS e (organization_id, action, resource_type, resource_id, resource_name, changes)"
            ),
            &[types::UUID, types::TEXT, types::TEXT, types::TEXT],
        )
    };
}

static ORGANIZATION_CREATED: Statement = audited!(
    "SELECT n.id, 'organization.created', 'organization', n.id, n.name,
            audit_diff(NULL, jsonb_build_object('name', n.name, 'slug', n.slug, 'org_type', n.org_type))
     FROM new_rows n"
);

static ORGANIZATION_CHANGED: Statement = audited!(
    "SELECT n.id, a.action, 'organization', n.id, n.name, a.changes
     FROM old_rows o JOIN new_rows n ON n.id = o.id
     CROSS JOIN LATERAL (VALUES
         ('organization.ownership_transferred',
          audit_diff(jsonb_build_object('owner_id', o.owner_id), jsonb_build_object('owner_id', n.owner_id))),
         ('organization.renamed', audit_diff(jsonb_build_object('name', o.name), jsonb_build_object('name', n.name))),
         ('organization.slug_changed', audit_diff(jsonb_build_object('slug', o.slug), jsonb_build_object('slug', n.slug))),
         ('organization.updated',
          audit_diff(to_jsonb(o) - '{id,name,slug,owner_id,member_count,created_at,updated_at}'::text[],
                     to_jsonb(n) - '{id,name,slug,owner_id,member_count,created_at,updated_at}'::text[]))
     ) AS a (action, changes)
     WHERE a.changes <> '{}'::jsonb"
);

static ORGANIZATION_DELETED: Statement = audited!(
    "SELECT o.id, 'organization.deleted', 'organization', o.id, o.name,
            audit_diff(jsonb_build_object('name', o.name, 'slug', o.slug), NULL)
     FROM old_rows o"
);

static MEMBER_ADDED: Statement = audited!(
    "SELECT n.organization_id, 'member.added', 'member', n.user_id, user_label(n.user_id),
            audit_diff(NULL, jsonb_build_object('role', n.role))
     FROM new_rows n"
);

static MEMBER_CHANGED: Statement = audited!(
    "SELECT n.organization_id, 'member.role_changed', 'member', n.user_id, user_label(n.user_id),
            audit_diff(jsonb_build_object('role', o.role), jsonb_build_object('role', n.role))
     FROM old_rows o JOIN new_rows n ON n.id = o.id
     WHERE o.role IS DISTINCT FROM n.role"
);

// Members of an organization being deleted go with it: its own entry says so.
static MEMBER_REMOVED: Statement = audited!(
    "SELECT o.organization_id, CASE WHEN o.user_id = $1 THEN 'member.left' ELSE 'member.removed' END,
            'member', o.user_id, user_label(o.user_id), audit_diff(jsonb_build_object('role', o.role), NULL)
     FROM old_rows o
     WHERE EXISTS (SELECT 1 FROM organizations g WHERE g.id = o.organization_id)"
);

static INVITATION_CREATED: Statement = audited!(
    "SELECT n.organization_id, 'invitation.created', 'invitation', n.id, n.email,
            audit_diff(NULL, jsonb_build_object('email', n.email, 'role', n.role, 'expires_at', n.expires_at))
     FROM new_rows n"
);

static INVITATION_CHANGED: Statement = audited!(
    "SELECT n.organization_id, 'invitation.' || n.status, 'invitation', n.id, n.email,
            audit_diff(jsonb_build_object('status', o.status), jsonb_build_object('status', n.status))
     FROM old_rows o JOIN new_rows n ON n.id = o.id
     WHERE o.status IS DISTINCT FROM n.status"
);

static ROLE_CREATED: Statement = audited!(
    "SELECT n.organization_id, 'role.created', 'role', n.id, n.key,
            audit_diff(NULL, jsonb_build_object('scope', n.scope, 'name', n.name, 'hierarchy_level', n.hierarchy_level))
     FROM new_rows n"
);

static ROLE_CHANGED: Statement = audited!(
    "SELECT n.organization_id, 'role.updated', 'role', n.id, n.key,
            audit_diff(to_jsonb(o) - '{created_at,updated_at}'::text[], to_jsonb(n) - '{created_at,updated_at}'::text[])
     FROM old_rows o JOIN new_rows n ON n.id = o.id
     WHERE (to_jsonb(o) - '{created_at,updated_at}'::text[]) <> (to_jsonb(n) - '{created_at,updated_at}'::text[])"
);

static ROLE_DELETED: Statement = audited!(
    "SELECT o.organization_id, 'role.deleted', 'role', o.id, o.key,
            audit_diff(jsonb_build_object('name', o.name, 'hierarchy_level', o.hierarchy_level), NULL)
     FROM old_rows o
     WHERE o.organization_id IS NULL OR EXISTS (SELECT 1 FROM organizations g WHERE g.id = o.organization_id)"
);

static PERMISSION_GRANTED: Statement = audited!(
    "SELECT r.organization_id, 'role.permission_granted', 'role', r.id, r.key,
            audit_diff(NULL, jsonb_build_object('permission', n.permission))
     FROM new_rows n JOIN roles r ON r.id = n.role_id"
);

// A role's deletion takes its grants along: the role's own entry says so.
static PERMISSION_REVOKED: Statement = audited!(
    "SELECT r.organization_id, 'role.permission_revoked', 'role', r.id, r.key,
            audit_diff(jsonb_build_object('permission', o.permission), NULL)
     FROM old_rows o JOIN roles r ON r.id = o.role_id"
);

static PLATFORM_ROLE_GRANTED: Statement = audited!(
    "SELECT NULL::uuid, 'platform_role.granted', 'user', n.user_id, user_label(n.user_id),
            audit_diff(NULL, jsonb_build_object('role', r.key, 'expires_at', n.expires_at))
     FROM new_rows n LEFT JOIN roles r ON r.id = n.role_id"
);

static PLATFORM_ROLE_CHANGED: Statement = audited!(
    "SELECT NULL::uuid, 'platform_role.updated', 'user', n.user_id, user_label(n.user_id),
            audit_diff(to_jsonb(o) - 'id', to_jsonb(n) - 'id')
     FROM old_rows o JOIN new_rows n ON n.id = o.id
     WHERE (to_jsonb(o) - 'id') <> (to_jsonb(n) - 'id')"
);

static PLATFORM_ROLE_REVOKED: Statement = audited!(
    "SELECT NULL::uuid, 'platform_role.revoked', 'user', o.user_id, user_label(o.user_id),
            audit_diff(jsonb_build_object('role', r.key, 'expires_at', o.expires_at), NULL)
     FROM old_rows o LEFT JOIN roles r ON r.id = o.role_id"
);

static SUBSCRIPTION_CHANGED: Statement = audited!(
    "SELECT n.organization_id, a.action, 'subscription', n.id, n.plan, a.changes
     FROM old_rows o JOIN new_rows n ON n.id = o.id
     CROSS JOIN LATERAL (VALUES
         ('subscription.plan_changed', audit_diff(jsonb_build_object('plan', o.plan), jsonb_build_object('plan', n.plan))),
         ('subscription.status_changed', audit_diff(jsonb_build_object('status', o.status), jsonb_build_object('status', n.status))),
         ('subscription.seats_changed', audit_diff(jsonb_build_object('seats', o.seats), jsonb_build_object('seats', n.seats)))
     ) AS a (action, changes)
     WHERE a.changes <> '{}'::jsonb"
);

static TEAM_CREATED: Statement = audited!(
    "SELECT n.organization_id, 'team.created', 'team', n.id, n.name,
            audit_diff(NULL, jsonb_build_object('name', n.name, 'privacy', n.privacy))
     FROM new_rows n"
);

static TEAM_CHANGED: Statement = audited!(
    "SELECT n.organization_id, 'team.updated', 'team', n.id, n.name,
            audit_diff(to_jsonb(o) - '{created_at,updated_at}'::text[], to_jsonb(n) - '{created_at,updated_at}'::text[])
     FROM old_rows o JOIN new_rows n ON n.id = o.id
     WHERE (to_jsonb(o) - '{created_at,updated_at}'::text[]) <> (to_jsonb(n) - '{created_at,updated_at}'::text[])"
);

static TEAM_DELETED: Statement = audited!(
    "SELECT o.organization_id, 'team.deleted', 'team', o.id, o.name,
            audit_diff(jsonb_build_object('name', o.name, 'privacy', o.privacy), NULL)
     FROM old_rows o
     WHERE EXISTS (SELECT 1 FROM organizations g WHERE g.id = o.organization_id)"
);

static TEAM_MEMBER_ADDED: Statement = audited!(
    "SELECT n.organization_id, 'team.member_added', 'team', n.team_id, t.name,
            audit_diff(NULL, jsonb_build_object('user_id', n.user_id, 'user', user_label(n.user_id), 'role', n.role))
     FROM new_rows n JOIN teams t ON t.id = n.team_id"
);

// A team's (or its organization's) deletion takes its members along: its own entry says so.
static TEAM_MEMBER_REMOVED: Statement = audited!(
    "SELECT o.organization_id, 'team.member_removed', 'team', o.team_id, t.name,
            audit_diff(jsonb_build_object('user_id', o.user_id, 'user', user_label(o.user_id), 'role', o.role), NULL)
     FROM old_rows o JOIN teams t ON t.id = o.team_id"
);

static WORKSPACE_CREATED: Statement = audited!(
    "SELECT n.organization_id, 'workspace.created', 'workspace', n.id, n.name,
            audit_diff(NULL, jsonb_build_object('name', n.name, 'slug', n.slug, 'visibility', n.visibility, 'team_id', n.team_id))
     FROM new_rows n"
);

static WORKSPACE_CHANGED: Statement = audited!(
    "SELECT n.organization_id, 'workspace.updated', 'workspace', n.id, n.name,
            audit_diff(to_jsonb(o) - '{created_at,updated_at}'::text[], to_jsonb(n) - '{created_at,updated_at}'::text[])
     FROM old_rows o JOIN new_rows n ON n.id = o.id
     WHERE (to_jsonb(o) - '{created_at,updated_at}'::text[]) <> (to_jsonb(n) - '{created_at,updated_at}'::text[])"
);

static WORKSPACE_DELETED: Statement = audited!(
    "SELECT o.organization_id, 'workspace.deleted', 'workspace', o.id, o.name,
            audit_diff(jsonb_build_object('name', o.name, 'slug', o.slug), NULL)
     FROM old_rows o
     WHERE EXISTS (SELECT 1 FROM organizations g WHERE g.id = o.organization_id)"
);

static WORKSPACE_MEMBER_ADDED: Statement = audited!(
    "SELECT n.organization_id, 'workspace.member_added', 'workspace', n.workspace_id, w.name,
            audit_diff(NULL, jsonb_build_object('user_id', n.user_id, 'user', user_label(n.user_id), 'role', n.role))
     FROM new_rows n JOIN workspaces w ON w.id = n.workspace_id"
);

static WORKSPACE_MEMBER_REMOVED: Statement = audited!(
    "SELECT o.organization_id, 'workspace.member_removed', 'workspace', o.workspace_id, w.name,
            audit_diff(jsonb_build_object('user_id', o.user_id, 'user', user_label(o.user_id), 'role', o.role), NULL)
     FROM old_rows o JOIN workspaces w ON w.id = o.workspace_id"
);

/// The statement recording `op` on `table`, if that change is audited.
fn statement_for(table: &str, op: PgTriggerOperation) -> Option<&'static Statement> {
    use PgTriggerOperation::{Delete, Insert, Update};
    Some(match (table, op) {
        ("organizations", Insert) => &ORGANIZATION_CREATED,
        ("organizations", Update) => &ORGANIZATION_CHANGED,
        ("organizations", Delete) => &ORGANIZATION_DELETED,
        ("organization_members", Insert) => &MEMBER_ADDED,
        ("organization_members", Update) => &MEMBER_CHANGED,
        ("organization_members", Delete) => &MEMBER_REMOVED,
        ("invitations", Insert) => &INVITATION_CREATED,
        ("invitations", Update) => &INVITATION_CHANGED,
        ("roles", Insert) => &ROLE_CREATED,
        ("roles", Update) => &ROLE_CHANGED,
        ("roles", Delete) => &ROLE_DELETED,
        ("role_permissions", Insert) => &PERMISSION_GRANTED,
        ("role_permissions", Delete) => &PERMISSION_REVOKED,
        ("user_roles", Insert) => &PLATFORM_ROLE_GRANTED,
        ("user_roles", Update) => &PLATFORM_ROLE_CHANGED,
        ("user_roles", Delete) => &PLATFORM_ROLE_REVOKED,
        ("org_subscriptions", Update) => &SUBSCRIPTION_CHANGED,
        ("teams", Insert) => &TEAM_CREATED,
        ("teams", Update) => &TEAM_CHANGED,
        ("teams", Delete) => &TEAM_DELETED,
        ("team_members", Insert) => &TEAM_MEMBER_ADDED,
        ("team_members", Delete) => &TEAM_MEMBER_REMOVED,
        ("workspaces", Insert) => &WORKSPACE_CREATED,
        ("workspaces", Update) => &WORKSPACE_CHANGED,
        ("workspaces", Delete) => &WORKSPACE_DELETED,
        ("workspace_members", Insert) => &WORKSPACE_MEMBER_ADDED,
        ("workspace_members", Delete) => &WORKSPACE_MEMBER_REMOVED,
        _ => return None,
    })
}

static ACTOR_NAME: Statement = Statement::read("SELECT user_label($1)", &[types::UUID]);

/// Who made the change: the request's user, their name now, the role the session acts as,
/// and the client's address as PostgREST passes it.
struct Actor {
    id: Option<Uuid>,
    name: Option<String>,
    role: String,
    ip: Option<String>,
}

impl Actor {
    fn current(client: &SpiClient<'_>) -> Actor {
        let id = auth_context::current_uid(client);
        let name = id.and_then(|uid| {
            spi::one::<String>(client, &ACTOR_NAME, &[uid.into()], "reading the actor")
        });
        Actor {
            id,
            name,
            role: auth_context::outer_role_name(),
            ip: client_ip(),
        }
    }
}

/// The first address of `x-forwarded-for` (else `x-real-ip`) in PostgREST's
/// `request.headers`; anything that does not parse as an address is left out.
fn client_ip() -> Option<String> {
    let headers = auth_context::setting("request.headers")?;
    let headers: serde_json::Value = serde_json::from_str(&headers).ok()?;
    ["x-forwarded-for", "x-real-ip"].iter().find_map(|name| {
        let value = headers.get(*name)?.as_str()?;
        let first = value.split(',').next()?.trim();
        first.parse::<IpAddr>().ok().map(|ip| ip.to_string())
    })
}

/// `audit_changes`: AFTER INSERT / UPDATE / DELETE … REFERENCING OLD TABLE AS old_rows NEW
/// TABLE AS new_rows FOR EACH STATEMENT on the audited tables. A restore loads the log as it
/// was: nothing to record then.
#[pg_trigger]
fn audit_changes<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::datum::TryFromDatumError> {
    if backup::restore_in_progress() {
        return Ok(None);
    }
    let what = "recording the audit log";
    let table = trigger.table_name().or_fail(what);
    let op = trigger.op().or_fail(what);
    let Some(statement) = statement_for(&table, op) else {
        errors::internal(
            what,
            format!("audit_changes() does not audit this event on {table}"),
        )
    };
    let data = trigger.trigger_data();
    let rows = if data.tg_newtable.is_null() {
        data.tg_oldtable
    } else {
        data.tg_newtable
    };
    if rows.is_null() {
        errors::internal(
            what,
            "audit_changes() needs REFERENCING old_rows / new_rows",
        );
    }
    // SAFETY: the statement's transition table, alive while its AFTER triggers run.
    if unsafe { pg_sys::tuplestore_tuple_count(rows) } == 0 {
        return Ok(None);
    }
    Spi::connect_mut(|client| {
        // SAFETY: makes the transition tables readable as old_rows / new_rows in this connection.
        unsafe {
            pg_sys::SPI_register_trigger_data(
                data as *const pg_sys::TriggerData as *mut pg_sys::TriggerData,
            )
        };
        let actor = Actor::current(client);
        spi::run(
            client,
            statement,
            &[
                actor.id.into(),
                actor.name.into(),
                actor.role.into(),
                actor.ip.into(),
            ],
            what,
        );
    });
    Ok(None)
}

/// `refuse_audit_update`: BEFORE UPDATE ON audit_log. Entries are never rewritten, whoever asks.
#[pg_trigger]
fn refuse_audit_update<'a>(
    _trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::datum::TryFromDatumError> {
    errors::insufficient_privilege("the audit log is append-only: entries cannot be changed")
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::testing::claims_of;
    use pgrx::prelude::*;

    const OWNER: &str = "00000000-0000-0000-0000-0000000000b1";
    const MEMBER: &str = "00000000-0000-0000-0000-0000000000b2";

    fn team() -> String {
        Spi::run(&format!(
            "INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES
               ('{OWNER}', 'owner-b@example.com', '{{\"full_name\":\"Bea Owner\"}}'),
               ('{MEMBER}', 'member-b@example.com', '{{}}')"
        ))
        .unwrap();
        claims_of(OWNER);
        let org = Spi::get_one::<pgrx::Uuid>("SELECT create_organization('Bravo', 'business')")
            .unwrap()
            .unwrap();
        org.to_string()
    }

    fn entries(org: &str) -> String {
        Spi::get_one::<String>(&format!(
            "SELECT string_agg(action || ':' || coalesce(actor_name, '-') || ':' || changes::text, ' | ' ORDER BY occurred_at, action)
             FROM audit_log WHERE organization_id = '{org}' AND action <> 'organization.created'"
        ))
        .unwrap()
        .unwrap_or_default()
    }

    #[pg_test]
    fn role_changes_are_recorded_with_actor_before_after_and_address() {
        let org = team();
        Spi::run(&format!(
            "UPDATE org_subscriptions SET plan = 'business' WHERE organization_id = '{org}';
             SELECT set_config('request.headers', '{{\"x-forwarded-for\":\"203.0.113.7, 10.0.0.1\"}}', true);
             INSERT INTO organization_members (organization_id, user_id, role) VALUES ('{org}', '{MEMBER}', 'member');
             SELECT update_member_role('{org}', '{MEMBER}', 'viewer');"
        ))
        .unwrap();
        let recorded = entries(&org);
        assert!(
            recorded.contains(
                r#"member.role_changed:Bea Owner:{"role": {"after": "viewer", "before": "member"}}"#
            ),
            "{recorded}"
        );
        let ip = Spi::get_one::<String>(&format!(
            "SELECT host(ip_address) FROM audit_log WHERE organization_id = '{org}' AND action = 'member.role_changed'"
        ))
        .unwrap();
        assert_eq!(ip.as_deref(), Some("203.0.113.7"));
    }

    #[pg_test]
    fn a_member_count_moving_is_not_an_entry_but_a_rename_is() {
        let org = team();
        let before = Spi::get_one::<i64>("SELECT count(*) FROM audit_log WHERE action LIKE 'organization.%' AND action <> 'organization.created'").unwrap();
        Spi::run(&format!(
            "UPDATE organizations SET member_count = member_count WHERE id = '{org}'"
        ))
        .unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM audit_log WHERE action LIKE 'organization.%' AND action <> 'organization.created'").unwrap(),
            before
        );
        Spi::run(&format!(
            "UPDATE organizations SET name = 'Bravo Ltd' WHERE id = '{org}'"
        ))
        .unwrap();
        assert!(entries(&org).contains(
            r#"organization.renamed:Bea Owner:{"name": {"after": "Bravo Ltd", "before": "Bravo"}}"#
        ));
    }

    #[pg_test]
    #[should_panic(expected = "the audit log is append-only")]
    fn entries_cannot_be_changed_even_by_the_owner() {
        team();
        Spi::run("UPDATE audit_log SET actor_name = 'someone else'").unwrap();
    }

    #[pg_test]
    fn a_deleted_organization_stays_on_record() {
        let org = team();
        Spi::run(&format!("SELECT delete_organization('{org}')")).unwrap();
        assert!(entries(&org).contains("organization.deleted:Bea Owner"));
        // Its members went with it: no member.removed entries for them.
        assert!(!entries(&org).contains("member.removed"));
    }
}
