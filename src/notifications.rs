//! Notifications (sql/notifications.sql): created from the audit log's entries, read and
//! marked by their user through RPCs, announced with `pg_notify`.
// pgrx reads a set-returning function's columns from its signature: they are spelled out there.
#![allow(clippy::type_complexity)]
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::{JsonB, Uuid};

use crate::backup;
use crate::errors;
use crate::members;
use crate::spi::{self, types, Expect, Statement};

pgrx::extension_sql_file!(
    "../sql/notifications.sql",
    name = "notifications",
    requires = [
        "audit",
        notify_from_audit,
        get_notifications,
        get_unread_notification_count,
        mark_notification_read,
        mark_all_notifications_read,
        archive_notification,
    ]
);

/// The channel every new notification is announced on.
pub const CHANNEL: &str = "saas_core_notifications";

// One rule per notification type: who hears of which audit entry, and what they read.
static NOTIFY: Statement = Statement::write(
    "WITH created AS (
         INSERT INTO notifications (user_id, organization_id, type, title, body, data)
         SELECT r.user_id, e.organization_id, r.type, r.title, r.body, r.data
         FROM new_entries e
         JOIN organizations g ON g.id = e.organization_id
         CROSS JOIN LATERAL (
             SELECT u.id, 'invitation.received', 'You are invited to join ' || g.name,
                    coalesce(e.actor_name, 'Someone') || ' invited you to join ' || g.name || ' as '
                        || (e.changes -> 'role' ->> 'after') || '.',
                    jsonb_build_object('invitation_id', e.resource_id, 'role', e.changes -> 'role' -> 'after')
             FROM users u
             WHERE e.action = 'invitation.created' AND lower(u.email) = e.resource_name AND u.deleted_at IS NULL
             UNION ALL
             SELECT i.invited_by, 'invitation.accepted', coalesce(e.actor_name, 'Someone') || ' joined ' || g.name,
                    coalesce(e.actor_name, 'Someone') || ' accepted your invitation to ' || g.name || '.',
                    jsonb_build_object('invitation_id', i.id, 'user_id', e.actor_id)
             FROM invitations i
             WHERE e.action = 'invitation.accepted' AND i.id = e.resource_id
             UNION ALL
             SELECT e.resource_id, 'member.role_changed', 'Your role in ' || g.name || ' changed',
                    'You are now ' || (e.changes -> 'role' ->> 'after') || ' in ' || g.name || '.',
                    jsonb_build_object('role', e.changes -> 'role' -> 'after', 'previous_role', e.changes -> 'role' -> 'before')
             WHERE e.action = 'member.role_changed'
             UNION ALL
             SELECT e.resource_id, 'member.removed', 'You were removed from ' || g.name,
                    coalesce(e.actor_name, 'An administrator') || ' removed you from ' || g.name || '.',
                    '{}'::jsonb
             WHERE e.action = 'member.removed'
             UNION ALL
             SELECT (e.changes -> 'owner_id' ->> 'after')::uuid, 'organization.ownership_transferred',
                    'You now own ' || g.name, 'Ownership of ' || g.name || ' was transferred to you.',
                    jsonb_build_object('previous_owner_id', e.changes -> 'owner_id' -> 'before')
             WHERE e.action = 'organization.ownership_transferred'
         ) AS r (user_id, type, title, body, data)
         WHERE r.user_id IS NOT NULL
           AND r.user_id IS DISTINCT FROM e.actor_id
           AND EXISTS (SELECT 1 FROM users u WHERE u.id = r.user_id)
           AND NOT EXISTS (SELECT 1 FROM notification_preferences p
                           WHERE p.user_id = r.user_id AND p.notification_type = r.type AND NOT p.in_app_enabled)
         RETURNING id, user_id, organization_id, type
     )
     SELECT count(pg_notify($1, json_build_object('id', id, 'user_id', user_id,
                                                  'organization_id', organization_id, 'type', type)::text))
     FROM created",
    &[types::TEXT],
);

/// `notify_from_audit`: AFTER INSERT ON audit_log REFERENCING NEW TABLE AS new_entries FOR
/// EACH STATEMENT.
#[pg_trigger]
fn notify_from_audit<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::datum::TryFromDatumError> {
    if backup::restore_in_progress() {
        return Ok(None);
    }
    let data = trigger.trigger_data();
    if data.tg_newtable.is_null() {
        errors::internal(
            "creating notifications",
            "notify_from_audit() needs REFERENCING NEW TABLE AS new_entries",
        );
    }
    Spi::connect_mut(|client| {
        // SAFETY: makes the transition table readable as new_entries in this connection.
        unsafe {
            pg_sys::SPI_register_trigger_data(
                data as *const pg_sys::TriggerData as *mut pg_sys::TriggerData,
            )
        };
        spi::run(client, &NOTIFY, &[CHANNEL.into()], "creating notifications");
    });
    Ok(None)
}

static NOTIFICATIONS: Statement = Statement::read(
    "SELECT id, organization_id, type, title, body, data, link, read_at, archived_at, created_at
     FROM notifications
     WHERE user_id = $1 AND ($2::timestamptz IS NULL OR created_at < $2)
       AND ($3 OR archived_at IS NULL)
     ORDER BY created_at DESC, id
     LIMIT $4",
    &[types::UUID, types::TIMESTAMPTZ, types::BOOL, types::INT4],
);

/// The caller's notifications, newest first, `max_rows` at a time (page with `before`, the
/// `created_at` of the last one seen). Archived ones only when asked for.
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn get_notifications(
    max_rows: default!(Option<i32>, 50),
    before: default!(Option<TimestampWithTimeZone>, "NULL"),
    include_archived: default!(Option<bool>, false),
) -> TableIterator<
    'static,
    (
        name!(id, Uuid),
        name!(organization_id, Option<Uuid>),
        name!(type, String),
        name!(title, String),
        name!(body, String),
        name!(data, JsonB),
        name!(link, Option<String>),
        name!(read_at, Option<TimestampWithTimeZone>),
        name!(archived_at, Option<TimestampWithTimeZone>),
        name!(created_at, TimestampWithTimeZone),
    ),
> {
    let max_rows = errors::required(max_rows, "max_rows");
    if !(1..=1000).contains(&max_rows) {
        errors::invalid_parameter("get_notifications: max_rows must be between 1 and 1000");
    }
    let what = "reading notifications";
    let rows: Vec<_> = Spi::connect(|client| {
        let caller = members::signed_in(client, "get_notifications");
        client
            .select(
                NOTIFICATIONS.prepared(client),
                None,
                &[
                    caller.into(),
                    before.into(),
                    include_archived.unwrap_or(false).into(),
                    max_rows.into(),
                ],
            )
            .or_fail(what)
            .map(|row| {
                (
                    errors::required(row.get(1).or_fail(what), "id"),
                    row.get(2).or_fail(what),
                    row.get(3).or_fail(what).unwrap_or_default(),
                    row.get(4).or_fail(what).unwrap_or_default(),
                    row.get(5).or_fail(what).unwrap_or_default(),
                    row.get(6)
                        .or_fail(what)
                        .unwrap_or(JsonB(serde_json::json!({}))),
                    row.get(7).or_fail(what),
                    row.get(8).or_fail(what),
                    row.get(9).or_fail(what),
                    errors::required(row.get(10).or_fail(what), "created_at"),
                )
            })
            .collect()
    });
    TableIterator::new(rows)
}

static UNREAD: Statement = Statement::read(
    "SELECT count(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL AND archived_at IS NULL",
    &[types::UUID],
);

/// How many of the caller's notifications are unread (for a badge).
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn get_unread_notification_count() -> i64 {
    Spi::connect(|client| {
        let caller = members::signed_in(client, "get_unread_notification_count");
        spi::one::<i64>(client, &UNREAD, &[caller.into()], "counting notifications").unwrap_or(0)
    })
}

static MARK_READ: Statement = Statement::write(
    "UPDATE notifications SET read_at = coalesce(read_at, now()) WHERE id = $1 AND user_id = $2",
    &[types::UUID, types::UUID],
);

static ARCHIVE: Statement = Statement::write(
    "UPDATE notifications SET archived_at = coalesce(archived_at, now()), read_at = coalesce(read_at, now())
     WHERE id = $1 AND user_id = $2",
    &[types::UUID, types::UUID],
);

static MARK_ALL_READ: Statement = Statement::write(
    "UPDATE notifications SET read_at = now()
     WHERE user_id = $1 AND read_at IS NULL AND ($2::uuid IS NULL OR organization_id = $2)",
    &[types::UUID, types::UUID],
);

/// Runs `statement` on one of the caller's notifications: P0002 when it is not theirs (or
/// does not exist), the same answer either way.
fn on_own_notification(id: Option<Uuid>, statement: &'static Statement, action: &str) {
    let id = errors::required(id, "notification_id");
    Spi::connect_mut(|client| {
        let caller = members::signed_in(client, action);
        if spi::run(client, statement, &[id.into(), caller.into()], action) == 0 {
            errors::raise(
                PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
                format!("{action}: you have no notification {id}"),
            );
        }
    })
}

/// Marks one of the caller's notifications read.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn mark_notification_read(notification_id: Option<Uuid>) {
    on_own_notification(notification_id, &MARK_READ, "mark_notification_read")
}

/// Archives one of the caller's notifications (and marks it read).
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn archive_notification(notification_id: Option<Uuid>) {
    on_own_notification(notification_id, &ARCHIVE, "archive_notification")
}

/// Marks all the caller's notifications read (those of one organization when `org_id` is
/// given); returns how many changed.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn mark_all_notifications_read(org_id: default!(Option<Uuid>, "NULL")) -> i64 {
    Spi::connect_mut(|client| {
        let caller = members::signed_in(client, "mark_all_notifications_read");
        spi::run(
            client,
            &MARK_ALL_READ,
            &[caller.into(), org_id.into()],
            "marking notifications read",
        ) as i64
    })
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::testing::claims_of;
    use pgrx::prelude::*;

    const OWNER: &str = "00000000-0000-0000-0000-0000000000a1";
    const MEMBER: &str = "00000000-0000-0000-0000-0000000000a2";
    const INVITEE: &str = "00000000-0000-0000-0000-0000000000a3";

    fn team() -> String {
        Spi::run(&format!(
            "INSERT INTO auth.users (id, email, raw_user_meta_data) VALUES
               ('{OWNER}', 'owner-a@example.com', '{{\"full_name\":\"Ann Owner\"}}'),
               ('{MEMBER}', 'member-a@example.com', '{{}}'), ('{INVITEE}', 'invitee-a@example.com', '{{}}')"
        ))
        .unwrap();
        claims_of(OWNER);
        let org = Spi::get_one::<pgrx::Uuid>("SELECT create_organization('Alpha', 'business')")
            .unwrap()
            .unwrap();
        Spi::run(&format!(
            "UPDATE org_subscriptions SET plan = 'business' WHERE organization_id = '{org}';
             INSERT INTO organization_members (organization_id, user_id, role) VALUES ('{org}', '{MEMBER}', 'member')"
        ))
        .unwrap();
        org.to_string()
    }

    fn types_for(user: &str) -> String {
        Spi::get_one::<String>(&format!(
            "SELECT string_agg(type, ',' ORDER BY created_at, type) FROM notifications WHERE user_id = '{user}'"
        ))
        .unwrap()
        .unwrap_or_default()
    }

    #[pg_test]
    fn people_hear_of_what_happened_to_them_but_not_of_their_own_actions() {
        let org = team();
        Spi::run(&format!(
            "SELECT update_member_role('{org}', '{MEMBER}', 'viewer')"
        ))
        .unwrap();
        let token = Spi::get_one::<String>(&format!(
            "SELECT create_invitation('{org}', 'INVITEE-a@example.com', 'member')"
        ))
        .unwrap()
        .unwrap();
        assert_eq!(types_for(MEMBER), "member.role_changed");
        assert_eq!(types_for(INVITEE), "invitation.received");
        claims_of(INVITEE);
        Spi::run(&format!("SELECT accept_invitation('{token}')")).unwrap();
        assert_eq!(types_for(OWNER), "invitation.accepted");
        // The owner caused the rest: nothing else for them.
        claims_of(MEMBER);
        assert_eq!(
            Spi::get_one::<i64>("SELECT get_unread_notification_count()").unwrap(),
            Some(1)
        );
    }

    #[pg_test]
    fn a_preference_turns_a_type_off() {
        let org = team();
        Spi::run(&format!(
            "INSERT INTO notification_preferences (user_id, notification_type, in_app_enabled)
             VALUES ('{MEMBER}', 'member.role_changed', false);
             SELECT update_member_role('{org}', '{MEMBER}', 'viewer');"
        ))
        .unwrap();
        assert_eq!(types_for(MEMBER), "");
    }

    #[pg_test]
    #[should_panic(expected = "you have no notification")]
    fn nobody_marks_another_users_notification() {
        let org = team();
        Spi::run(&format!(
            "SELECT update_member_role('{org}', '{MEMBER}', 'viewer')"
        ))
        .unwrap();
        let id = Spi::get_one::<pgrx::Uuid>(&format!(
            "SELECT id FROM notifications WHERE user_id = '{MEMBER}'"
        ))
        .unwrap()
        .unwrap();
        claims_of(OWNER);
        Spi::run(&format!("SELECT mark_notification_read('{id}')")).unwrap();
    }
}
