//! Invitations by email (sql/invitations.sql): create (one or many), look up for an accept
//! page, accept, decline, revoke, list.
//!
//! The token is 32 random bytes from `pg_strong_random`, hex-encoded; only its SHA-256 is
//! stored. Acceptance locks the invitation row, so two accepts of one token, or an accept and
//! a revoke, serialize: the second sees the first's outcome. The seat limit is checked when the
//! membership is added (organizations' `track_membership`), so two accepts at the limit cannot
//! both pass.
// pgrx reads a set-returning function's columns from its signature: they are spelled out there.
#![allow(clippy::type_complexity)]
use pgrx::datum::Interval;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::Uuid;

use crate::auth_context;
use crate::errors;
use crate::members::{self, caller_access};
use crate::roles;
use crate::spi::{self, types, Expect, Statement};

pgrx::extension_sql_file!(
    "../sql/invitations.sql",
    name = "invitations",
    requires = [
        "members",
        "teams",
        create_invitation,
        create_invitations,
        lookup_invitation,
        accept_invitation,
        decline_invitation,
        revoke_invitation,
        get_organization_invitations,
    ]
);

const TOKEN_BYTES: usize = 32;
const MAX_EMAIL_LENGTH: usize = 320;

fn new_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    // SAFETY: fills a buffer of the given length.
    let ok = unsafe { pg_sys::pg_strong_random(bytes.as_mut_ptr().cast(), bytes.len()) };
    if !ok {
        errors::internal("creating an invitation token", "pg_strong_random failed");
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A token as the link carries it: 64 hex digits (22023 otherwise, before any lookup).
fn checked_token(token: Option<&str>) -> String {
    let token = errors::required(token, "token").trim();
    if token.len() != TOKEN_BYTES * 2 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        errors::invalid_parameter("invalid invitation token");
    }
    token.to_ascii_lowercase()
}

/// An address as invitations store it: trimmed, lower-cased, one `@` with text on both sides.
fn normalized_email(email: &str) -> String {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= MAX_EMAIL_LENGTH
        && !email.chars().any(char::is_whitespace)
        && matches!(email.split_once('@'), Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if !valid {
        errors::invalid_parameter(format!("\"{email}\" is not an email address"));
    }
    email
}

static SETTINGS: Statement = Statement::read(
    "SELECT $1::interval IS NULL OR ($1 >= interval '5 minutes' AND $1 <= s.max_expiry),
            s.max_pending_per_org, s.max_expiry::text
     FROM invitation_settings s",
    &[types::INTERVAL],
);

static LOCK_ORG: Statement = Statement::write(
    "SELECT is_personal FROM organizations WHERE id = $1 FOR UPDATE",
    &[types::UUID],
);

static EMAIL_IS_MEMBER: Statement = Statement::read(
    "SELECT EXISTS (SELECT 1 FROM organization_members m JOIN users u ON u.id = m.user_id
                    WHERE m.organization_id = $1 AND lower(u.email) = $2)",
    &[types::UUID, types::TEXT],
);

static PENDING_ELSEWHERE: Statement = Statement::read(
    "SELECT count(*) FROM invitations
     WHERE organization_id = $1 AND status = 'pending' AND expires_at > now() AND email <> $2",
    &[types::UUID, types::TEXT],
);

// Re-inviting replaces: the previous pending invitation is revoked (or, past its expiry, expired).
static RETIRE_PENDING: Statement = Statement::write(
    "UPDATE invitations
     SET status = CASE WHEN expires_at <= now() THEN 'expired' ELSE 'revoked' END, responded_at = now()
     WHERE organization_id = $1 AND email = $2 AND status = 'pending'",
    &[types::UUID, types::TEXT],
);

static INSERT_INVITATION: Statement = Statement::write(
    "INSERT INTO invitations (organization_id, email, role, token_hash, invited_by, expires_at,
                              team_id, workspace_id)
     VALUES ($1, $2, $3, sha256(decode($4, 'hex')), $5,
             now() + coalesce($6, (SELECT default_expiry FROM invitation_settings)), $7, $8)
     RETURNING id",
    &[
        types::UUID,
        types::TEXT,
        types::TEXT,
        types::TEXT,
        types::UUID,
        types::INTERVAL,
        types::UUID,
        types::UUID,
    ],
);

// Who may invite into a team or workspace besides team managers: its lead / its admins. The
// team or workspace must belong to the organization.
static MAY_INVITE_TO: Statement = Statement::read(
    "SELECT ($2::uuid IS NULL OR EXISTS (SELECT 1 FROM teams WHERE id = $2 AND organization_id = $1))
        AND ($3::uuid IS NULL OR EXISTS (SELECT 1 FROM workspaces WHERE id = $3 AND organization_id = $1)),
            ($2::uuid IS NULL OR EXISTS (SELECT 1 FROM team_members
                                         WHERE team_id = $2 AND user_id = $4 AND role = 'lead'))
        AND ($3::uuid IS NULL OR EXISTS (SELECT 1 FROM workspace_members
                                         WHERE workspace_id = $3 AND user_id = $4 AND role = 'admin'))",
    &[types::UUID, types::UUID, types::UUID, types::UUID],
);

/// What every invitation of one call shares, checked once.
struct Inviter {
    org: Uuid,
    role: String,
    team: Option<Uuid>,
    workspace: Option<Uuid>,
    invited_by: Option<Uuid>,
    expires_in: Option<Interval>,
    max_pending: i64,
}

impl Inviter {
    fn check(
        client: &mut SpiClient<'_>,
        org: Uuid,
        role: &str,
        into: (Option<Uuid>, Option<Uuid>),
        expires_in: Option<Interval>,
        action: &str,
    ) -> Inviter {
        let (team, workspace) = into;
        let access = caller_access(client, org, action);
        access.require("members.invite", action);
        if team.is_some() || workspace.is_some() {
            let what = "reading the team or workspace";
            let caller = auth_context::current_uid(client);
            let table = client
                .select(
                    MAY_INVITE_TO.prepared(client),
                    Some(1),
                    &[org.into(), team.into(), workspace.into(), caller.into()],
                )
                .or_fail(what);
            let row = table.first();
            if !row.get::<bool>(1).or_fail(what).unwrap_or(false) {
                errors::invalid_parameter(format!(
                    "{action}: the team or workspace is not part of this organization"
                ));
            }
            let leads = row.get::<bool>(2).or_fail(what).unwrap_or(false);
            if !access.has("teams.manage") && !leads {
                errors::insufficient_privilege(format!(
                    "{action}: inviting into a team or workspace takes teams.manage, or leading it"
                ));
            }
        }
        let personal =
            spi::one_mut::<bool>(client, &LOCK_ORG, &[org.into()], "reading the organization")
                .unwrap_or(false);
        if personal {
            errors::invalid_parameter(format!(
                "{action}: nobody can be invited to a personal organization"
            ));
        }
        roles::require_grantable(client, &access, org, role, action);
        let what = "reading invitation settings";
        let settings = client
            .select(SETTINGS.prepared(client), Some(1), &[expires_in.into()])
            .or_fail(what);
        let row = settings.first();
        if !row.get::<bool>(1).or_fail(what).unwrap_or(false) {
            let longest: String = row.get(3).or_fail(what).unwrap_or_default();
            errors::invalid_parameter(format!(
                "{action}: expires_in must be between 5 minutes and {longest}"
            ));
        }
        Inviter {
            org,
            role: role.to_string(),
            team,
            workspace,
            invited_by: auth_context::current_uid(client),
            expires_in,
            max_pending: row.get::<i32>(2).or_fail(what).unwrap_or(0) as i64,
        }
    }

    /// Invites one (normalized) address; returns the invitation's id and its token.
    fn invite(&self, client: &mut SpiClient<'_>, email: &str, action: &str) -> (Uuid, String) {
        let org = self.org;
        if spi::one::<bool>(
            client,
            &EMAIL_IS_MEMBER,
            &[org.into(), email.into()],
            "reading members",
        )
        .unwrap_or(false)
        {
            errors::unique_violation(format!(
                "{action}: {email} is already a member of this organization"
            ));
        }
        let pending = spi::one::<i64>(
            client,
            &PENDING_ELSEWHERE,
            &[org.into(), email.into()],
            "counting invitations",
        )
        .unwrap_or(0);
        if pending >= self.max_pending {
            errors::raise_with_hint(
                PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "{action}: this organization has {pending} pending invitations, the most allowed"
                ),
                "Revoke invitations that are no longer needed, or raise invitation_settings.max_pending_per_org.",
            );
        }
        spi::run(
            client,
            &RETIRE_PENDING,
            &[org.into(), email.into()],
            "replacing the invitation",
        );
        let token = new_token();
        let id = spi::one_mut::<Uuid>(
            client,
            &INSERT_INVITATION,
            &[
                org.into(),
                email.into(),
                self.role.as_str().into(),
                token.as_str().into(),
                self.invited_by.into(),
                self.expires_in.into(),
                self.team.into(),
                self.workspace.into(),
            ],
            "creating the invitation",
        );
        (errors::required(id, "invitation id"), token)
    }
}

/// Invites `email` to `org_id` with `role` (at most the inviter's), and optionally into one of
/// its teams / workspaces (`teams.manage`, or leading that team / administering that
/// workspace); returns the token, once. Needs `members.invite`. Re-inviting an address
/// replaces its pending invitation.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn create_invitation(
    org_id: Option<Uuid>,
    email: Option<&str>,
    role: default!(Option<&str>, "'member'"),
    expires_in: default!(Option<Interval>, "NULL"),
    team_id: default!(Option<Uuid>, "NULL"),
    workspace_id: default!(Option<Uuid>, "NULL"),
) -> String {
    let org = errors::required(org_id, "org_id");
    let email = normalized_email(errors::required(email, "email"));
    let role = errors::required(role, "role");
    let action = "create_invitation";
    Spi::connect_mut(|client| {
        let inviter = Inviter::check(
            client,
            org,
            role,
            (team_id, workspace_id),
            expires_in,
            action,
        );
        inviter.invite(client, &email, action).1
    })
}

/// `create_invitation` for many addresses at once: all or none.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn create_invitations(
    org_id: Option<Uuid>,
    emails: Option<Vec<Option<String>>>,
    role: default!(Option<&str>, "'member'"),
    expires_in: default!(Option<Interval>, "NULL"),
    team_id: default!(Option<Uuid>, "NULL"),
    workspace_id: default!(Option<Uuid>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(email, String),
        name!(invitation_id, Uuid),
        name!(token, String),
    ),
> {
    let org = errors::required(org_id, "org_id");
    let role = errors::required(role, "role");
    let action = "create_invitations";
    let mut addresses: Vec<String> = Vec::new();
    for email in errors::required(emails, "emails") {
        let email = normalized_email(&errors::required(email, "an email"));
        if addresses.contains(&email) {
            errors::invalid_parameter(format!("{action}: {email} is listed twice"));
        }
        addresses.push(email);
    }
    let rows: Vec<_> = Spi::connect_mut(|client| {
        let inviter = Inviter::check(
            client,
            org,
            role,
            (team_id, workspace_id),
            expires_in,
            action,
        );
        addresses
            .into_iter()
            .map(|email| {
                let (id, token) = inviter.invite(client, &email, action);
                (email, id, token)
            })
            .collect()
    });
    TableIterator::new(rows)
}

static LOOKUP: Statement = Statement::read(
    "SELECT i.id, i.organization_id, o.name, user_label(i.invited_by),
            i.email, i.role, effective_invitation_status(i.status, i.expires_at), i.expires_at,
            t.name, w.name
     FROM invitations i
     JOIN organizations o ON o.id = i.organization_id
     LEFT JOIN teams t ON t.id = i.team_id
     LEFT JOIN workspaces w ON w.id = i.workspace_id
     WHERE i.token_hash = sha256(decode($1, 'hex'))",
    &[types::TEXT],
);

/// What an accept page shows for a token: organization, inviter, role, status, expiry.
/// P0002 when no invitation has this token.
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn lookup_invitation(
    token: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(invitation_id, Uuid),
        name!(organization_id, Uuid),
        name!(organization_name, String),
        name!(invited_by_name, Option<String>),
        name!(email, String),
        name!(role, String),
        name!(status, String),
        name!(expires_at, TimestampWithTimeZone),
        name!(team_name, Option<String>),
        name!(workspace_name, Option<String>),
    ),
> {
    let token = checked_token(token);
    let what = "reading the invitation";
    let row = Spi::connect(|client| {
        let table = client
            .select(LOOKUP.prepared(client), Some(1), &[token.as_str().into()])
            .or_fail(what);
        if table.is_empty() {
            no_such_invitation();
        }
        let row = table.first();
        (
            errors::required(row.get(1).or_fail(what), "id"),
            errors::required(row.get(2).or_fail(what), "organization_id"),
            row.get(3).or_fail(what).unwrap_or_default(),
            row.get(4).or_fail(what),
            row.get(5).or_fail(what).unwrap_or_default(),
            row.get(6).or_fail(what).unwrap_or_default(),
            row.get(7).or_fail(what).unwrap_or_default(),
            errors::required(row.get(8).or_fail(what), "expires_at"),
            row.get(9).or_fail(what),
            row.get(10).or_fail(what),
        )
    });
    TableIterator::once(row)
}

fn no_such_invitation() -> ! {
    errors::raise(
        PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
        "no invitation has this token",
    )
}

static LOCK_BY_TOKEN: Statement = Statement::write(
    "SELECT i.id, i.organization_id, i.email, i.role, effective_invitation_status(i.status, i.expires_at),
            i.team_id, i.workspace_id
     FROM invitations i WHERE i.token_hash = sha256(decode($1, 'hex'))
     FOR UPDATE",
    &[types::TEXT],
);

static CALLER_EMAIL: Statement = Statement::read(
    "SELECT lower(email) FROM users WHERE id = $1",
    &[types::UUID],
);

static IS_MEMBER: Statement = Statement::read(
    "SELECT EXISTS (SELECT 1 FROM organization_members WHERE organization_id = $1 AND user_id = $2)",
    &[types::UUID, types::UUID],
);

static ADD_MEMBER: Statement = Statement::write(
    "INSERT INTO organization_members (organization_id, user_id, role) VALUES ($1, $2, $3)",
    &[types::UUID, types::UUID, types::TEXT],
);

static JOIN_TEAM: Statement = Statement::write(
    "INSERT INTO team_members (team_id, organization_id, user_id, added_by)
     SELECT $1, $2, $3, invited_by FROM invitations WHERE id = $4
     ON CONFLICT DO NOTHING",
    &[types::UUID, types::UUID, types::UUID, types::UUID],
);

static JOIN_WORKSPACE: Statement = Statement::write(
    "INSERT INTO workspace_members (workspace_id, organization_id, user_id, added_by)
     SELECT $1, $2, $3, invited_by FROM invitations WHERE id = $4
     ON CONFLICT DO NOTHING",
    &[types::UUID, types::UUID, types::UUID, types::UUID],
);

static RESPOND: Statement = Statement::write(
    "UPDATE invitations SET status = $2, responded_at = now(),
            accepted_by = CASE WHEN $2 = 'accepted' THEN $3 END
     WHERE id = $1",
    &[types::UUID, types::TEXT, types::UUID],
);

/// A pending invitation addressed to the caller, locked until the end of the transaction.
struct Addressed {
    id: Uuid,
    org: Uuid,
    role: String,
    team: Option<Uuid>,
    workspace: Option<Uuid>,
    caller: Uuid,
}

fn addressed_to_caller(client: &mut SpiClient<'_>, token: &str, action: &str) -> Addressed {
    let caller = members::signed_in(client, action);
    let what = "reading the invitation";
    let table = client
        .update(LOCK_BY_TOKEN.prepared(client), Some(1), &[token.into()])
        .or_fail(what);
    if table.is_empty() {
        no_such_invitation();
    }
    let row = table.first();
    let id: Uuid = errors::required(row.get(1).or_fail(what), "id");
    let org: Uuid = errors::required(row.get(2).or_fail(what), "organization_id");
    let email: String = row.get(3).or_fail(what).unwrap_or_default();
    let role: String = row.get(4).or_fail(what).unwrap_or_default();
    let status: String = row.get(5).or_fail(what).unwrap_or_default();
    let team: Option<Uuid> = row.get(6).or_fail(what);
    let workspace: Option<Uuid> = row.get(7).or_fail(what);
    let caller_email = spi::one::<String>(
        client,
        &CALLER_EMAIL,
        &[caller.into()],
        "reading your account",
    );
    if caller_email.as_deref() != Some(email.as_str()) {
        errors::insufficient_privilege(format!(
            "{action}: this invitation was sent to another email address"
        ));
    }
    if status != "pending" {
        errors::not_in_prerequisite_state(
            format!("{action}: this invitation is {status}"),
            "Ask the organization for a new invitation.",
        );
    }
    Addressed {
        id,
        org,
        role,
        team,
        workspace,
        caller,
    }
}

/// Joins the organization the invitation is for, with its role (and its team / workspace, if
/// any); returns the organization's id. The caller's account email must be the invited
/// address; single use.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn accept_invitation(token: Option<&str>) -> Uuid {
    let token = checked_token(token);
    Spi::connect_mut(|client| {
        let invitation = addressed_to_caller(client, &token, "accept_invitation");
        let already = spi::one::<bool>(
            client,
            &IS_MEMBER,
            &[invitation.org.into(), invitation.caller.into()],
            "reading members",
        )
        .unwrap_or(false);
        if !already {
            spi::run(
                client,
                &ADD_MEMBER,
                &[
                    invitation.org.into(),
                    invitation.caller.into(),
                    invitation.role.as_str().into(),
                ],
                "joining the organization",
            );
        }
        for (target, statement) in [
            (invitation.team, &JOIN_TEAM),
            (invitation.workspace, &JOIN_WORKSPACE),
        ] {
            if let Some(target) = target {
                spi::run(
                    client,
                    statement,
                    &[
                        target.into(),
                        invitation.org.into(),
                        invitation.caller.into(),
                        invitation.id.into(),
                    ],
                    "joining the team or workspace",
                );
            }
        }
        spi::run(
            client,
            &RESPOND,
            &[
                invitation.id.into(),
                "accepted".into(),
                invitation.caller.into(),
            ],
            "accepting the invitation",
        );
        invitation.org
    })
}

/// Declines an invitation addressed to the caller.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn decline_invitation(token: Option<&str>) {
    let token = checked_token(token);
    Spi::connect_mut(|client| {
        let invitation = addressed_to_caller(client, &token, "decline_invitation");
        spi::run(
            client,
            &RESPOND,
            &[
                invitation.id.into(),
                "declined".into(),
                invitation.caller.into(),
            ],
            "declining the invitation",
        );
    })
}

static LOCK_BY_ID: Statement = Statement::write(
    "SELECT organization_id, effective_invitation_status(status, expires_at)
     FROM invitations WHERE id = $1 FOR UPDATE",
    &[types::UUID],
);

/// Revokes a pending invitation. Needs `members.invite` in its organization.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn revoke_invitation(invitation_id: Option<Uuid>) {
    let id = errors::required(invitation_id, "invitation_id");
    let action = "revoke_invitation";
    let what = "reading the invitation";
    Spi::connect_mut(|client| {
        let table = client
            .update(LOCK_BY_ID.prepared(client), Some(1), &[id.into()])
            .or_fail(what);
        let found = (!table.is_empty()).then(|| {
            let row = table.first();
            (
                row.get::<Uuid>(1).or_fail(what),
                row.get::<String>(2).or_fail(what).unwrap_or_default(),
            )
        });
        let (org, status) = match found {
            Some((Some(org), status)) => (org, status),
            _ if auth_context::caller_is_service_role() => {
                errors::invalid_parameter(format!("{action}: no invitation {id}"))
            }
            _ => errors::insufficient_privilege(format!(
                "{action}: you may not manage this invitation (or it does not exist)"
            )),
        };
        let access = caller_access(client, org, action);
        access.require("members.invite", action);
        if status != "pending" {
            errors::not_in_prerequisite_state(
                format!("{action}: this invitation is {status}"),
                "Only pending invitations can be revoked.",
            );
        }
        spi::run(
            client,
            &RESPOND,
            &[id.into(), "revoked".into(), Option::<Uuid>::None.into()],
            "revoking the invitation",
        );
    })
}

static INVITATIONS: Statement = Statement::read(
    "SELECT i.id, i.email, i.role, effective_invitation_status(i.status, i.expires_at),
            i.invited_by, user_label(i.invited_by), i.expires_at, i.created_at,
            i.responded_at
     FROM invitations i
     WHERE i.organization_id = $1
     ORDER BY i.created_at DESC, i.id",
    &[types::UUID],
);

/// Every invitation of an organization, newest first, with its effective status.
/// Needs `members.invite`.
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn get_organization_invitations(
    org_id: Option<Uuid>,
) -> TableIterator<
    'static,
    (
        name!(id, Uuid),
        name!(email, String),
        name!(role, String),
        name!(status, String),
        name!(invited_by, Option<Uuid>),
        name!(invited_by_name, Option<String>),
        name!(expires_at, TimestampWithTimeZone),
        name!(created_at, TimestampWithTimeZone),
        name!(responded_at, Option<TimestampWithTimeZone>),
    ),
> {
    let org = errors::required(org_id, "org_id");
    let action = "get_organization_invitations";
    let what = "reading invitations";
    let rows: Vec<_> = Spi::connect(|client| {
        let access = caller_access(client, org, action);
        access.require("members.invite", action);
        client
            .select(INVITATIONS.prepared(client), None, &[org.into()])
            .or_fail(what)
            .map(|row| {
                (
                    errors::required(row.get(1).or_fail(what), "id"),
                    row.get(2).or_fail(what).unwrap_or_default(),
                    row.get(3).or_fail(what).unwrap_or_default(),
                    row.get(4).or_fail(what).unwrap_or_default(),
                    row.get(5).or_fail(what),
                    row.get(6).or_fail(what),
                    errors::required(row.get(7).or_fail(what), "expires_at"),
                    errors::required(row.get(8).or_fail(what), "created_at"),
                    row.get(9).or_fail(what),
                )
            })
            .collect()
    });
    TableIterator::new(rows)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::testing::{claims_of, error_of};
    use pgrx::prelude::*;

    const OWNER: &str = "00000000-0000-0000-0000-0000000000d1";
    const ADMIN: &str = "00000000-0000-0000-0000-0000000000d2";
    const INVITEE: &str = "00000000-0000-0000-0000-0000000000d3";
    const OTHER: &str = "00000000-0000-0000-0000-0000000000d4";

    fn team() -> String {
        Spi::run(&format!(
            "INSERT INTO auth.users (id, email) VALUES
               ('{OWNER}', 'owner-d@example.com'), ('{ADMIN}', 'admin-d@example.com'),
               ('{INVITEE}', 'Invitee-D@Example.com'), ('{OTHER}', 'other-d@example.com')"
        ))
        .unwrap();
        claims_of(OWNER);
        let org = Spi::get_one::<pgrx::Uuid>("SELECT create_organization('Delta', 'business')")
            .unwrap()
            .unwrap();
        Spi::run(&format!(
            "UPDATE org_subscriptions SET plan = 'business' WHERE organization_id = '{org}';
             INSERT INTO organization_members (organization_id, user_id, role) VALUES ('{org}', '{ADMIN}', 'admin')"
        ))
        .unwrap();
        org.to_string()
    }

    fn invite(org: &str, email: &str, role: &str) -> String {
        Spi::get_one::<String>(&format!(
            "SELECT create_invitation('{org}', '{email}', '{role}')"
        ))
        .unwrap()
        .unwrap()
    }

    fn status(token: &str) -> String {
        Spi::get_one::<String>(&format!("SELECT status FROM lookup_invitation('{token}')"))
            .unwrap()
            .unwrap()
    }

    #[pg_test]
    fn only_the_hash_is_stored_and_the_invitee_joins_once() {
        let org = team();
        let token = invite(&org, " INVITEE-d@example.com ", "member");
        assert_eq!(token.len(), 64);
        let stored = Spi::get_one::<bool>(&format!(
            "SELECT token_hash = sha256(decode('{token}', 'hex')) AND position(convert_to('{token}', 'UTF8') IN token_hash) = 0
             FROM invitations WHERE organization_id = '{org}'"
        ))
        .unwrap();
        assert_eq!(stored, Some(true));
        claims_of(OTHER);
        assert!(error_of(&format!("SELECT accept_invitation('{token}')"))
            .is_some_and(|e| e.contains("sent to another email address")));
        claims_of(INVITEE);
        Spi::run(&format!("SELECT accept_invitation('{token}')")).unwrap();
        assert_eq!(status(&token), "accepted");
        assert_eq!(
            Spi::get_one::<String>(&format!(
                "SELECT role FROM organization_members WHERE organization_id = '{org}' AND user_id = '{INVITEE}'"
            ))
            .unwrap()
            .as_deref(),
            Some("member")
        );
        assert!(error_of(&format!("SELECT accept_invitation('{token}')"))
            .is_some_and(|e| e.contains("this invitation is accepted")));
    }

    #[pg_test]
    fn re_inviting_replaces_and_admins_cannot_invite_owners() {
        let org = team();
        claims_of(ADMIN);
        let first = invite(&org, "new-d@example.com", "member");
        let second = invite(&org, "new-d@example.com", "viewer");
        assert_eq!(status(&first), "revoked");
        assert_eq!(status(&second), "pending");
        assert!(error_of(&format!(
            "SELECT create_invitation('{org}', 'boss-d@example.com', 'owner')"
        ))
        .is_some_and(|e| e.contains("ranks above your own")));
    }

    #[pg_test]
    fn expiry_and_the_pending_cap_are_settings() {
        let org = team();
        Spi::run("UPDATE invitation_settings SET max_pending_per_org = 2").unwrap();
        let token = invite(&org, "a-d@example.com", "member");
        invite(&org, "b-d@example.com", "member");
        assert!(error_of(&format!(
            "SELECT create_invitation('{org}', 'c-d@example.com', 'member')"
        ))
        .is_some_and(|e| e.starts_with("54000:")));
        Spi::run(&format!(
            "UPDATE invitations SET expires_at = now() - interval '1 second', created_at = now() - interval '1 day'
             WHERE token_hash = sha256(decode('{token}', 'hex'))"
        ))
        .unwrap();
        assert_eq!(status(&token), "expired");
        // The expired one no longer counts against the cap.
        invite(&org, "c-d@example.com", "member");
        assert!(error_of(&format!(
            "SELECT create_invitation('{org}', 'd-d@example.com', 'member', interval '2 years')"
        ))
        .is_some_and(|e| e.contains("expires_in must be between 5 minutes and 30 days")));
    }

    #[pg_test]
    fn an_invitation_into_a_team_joins_it_too() {
        let org = team();
        let team =
            Spi::get_one::<pgrx::Uuid>(&format!("SELECT create_team('{org}', 'Ops', 'secret')"))
                .unwrap()
                .unwrap();
        let token = Spi::get_one::<String>(&format!(
            "SELECT create_invitation('{org}', 'invitee-d@example.com', 'member', team_id => '{team}')"
        ))
        .unwrap()
        .unwrap();
        claims_of(INVITEE);
        assert_eq!(
            Spi::get_one::<String>(&format!(
                "SELECT team_name FROM lookup_invitation('{token}')"
            ))
            .unwrap()
            .as_deref(),
            Some("Ops")
        );
        Spi::run(&format!("SELECT accept_invitation('{token}')")).unwrap();
        assert_eq!(
            Spi::get_one::<String>(&format!(
                "SELECT (SELECT role FROM team_members WHERE team_id = '{team}' AND user_id = '{INVITEE}')"
            ))
            .unwrap()
            .as_deref(),
            Some("member")
        );
        // A team of another organization is refused before anything is written.
        claims_of(OWNER);
        let other = Spi::get_one::<pgrx::Uuid>("SELECT create_organization('Echo', 'business')")
            .unwrap()
            .unwrap();
        assert!(error_of(&format!(
            "SELECT create_invitation('{other}', 'x-d@example.com', 'member', team_id => '{team}')"
        ))
        .is_some_and(|e| e.contains("not part of this organization")));
    }

    #[pg_test]
    #[should_panic(expected = "invalid invitation token")]
    fn malformed_tokens_are_refused() {
        Spi::run("SELECT * FROM lookup_invitation('not-a-token')").unwrap();
    }
}
