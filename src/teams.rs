//! Teams and workspaces inside an organization (sql/teams.sql): privacy and visibility are
//! enforced by row level security; the RPCs create one with its creator as lead / admin.
use pgrx::prelude::*;
use pgrx::Uuid;

use crate::auth_context;
use crate::errors;
use crate::members::caller_access;
use crate::spi::{self, types, Statement};

pgrx::extension_sql_file!(
    "../sql/teams.sql",
    name = "teams",
    requires = ["roles", create_team, create_workspace]
);

const PRIVACY: &[&str] = &["public", "private", "secret"];
const VISIBILITY: &[&str] = &["organization", "team", "private"];

static INSERT_TEAM: Statement = Statement::write(
    "INSERT INTO teams (organization_id, name, privacy, description, created_by)
     VALUES ($1, $2, $3, $4, $5) RETURNING id",
    &[
        types::UUID,
        types::TEXT,
        types::TEXT,
        types::TEXT,
        types::UUID,
    ],
);

static ADD_LEAD: Statement = Statement::write(
    "INSERT INTO team_members (team_id, organization_id, user_id, role, added_by)
     VALUES ($1, $2, $3, 'lead', $3)",
    &[types::UUID, types::UUID, types::UUID],
);

static TEAM_NAME_TAKEN: Statement = Statement::read(
    "SELECT EXISTS (SELECT 1 FROM teams WHERE organization_id = $1 AND lower(name) = lower(btrim($2)))",
    &[types::UUID, types::TEXT],
);

/// Creates a team in `org_id` (needs `teams.manage`); the caller, if a member, becomes its lead.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn create_team(
    org_id: Option<Uuid>,
    name: Option<&str>,
    privacy: default!(Option<&str>, "'private'"),
    description: default!(Option<&str>, "NULL"),
) -> Uuid {
    let org = errors::required(org_id, "org_id");
    let name = errors::required(name, "name").trim();
    let privacy = errors::required(privacy, "privacy");
    let action = "create_team";
    if !PRIVACY.contains(&privacy) {
        errors::invalid_parameter(format!(
            "{action}: privacy must be one of public, private, secret"
        ));
    }
    Spi::connect_mut(|client| {
        let access = caller_access(client, org, action);
        access.require("teams.manage", action);
        if spi::one::<bool>(
            client,
            &TEAM_NAME_TAKEN,
            &[org.into(), name.into()],
            "reading teams",
        )
        .unwrap_or(false)
        {
            errors::unique_violation(format!(
                "{action}: this organization already has a team named \"{name}\""
            ));
        }
        let caller = auth_context::current_uid(client).filter(|_| access.is_member());
        let team = errors::required(
            spi::one_mut::<Uuid>(
                client,
                &INSERT_TEAM,
                &[
                    org.into(),
                    name.into(),
                    privacy.into(),
                    description.into(),
                    caller.into(),
                ],
                "creating the team",
            ),
            "team id",
        );
        if let Some(lead) = caller {
            spi::run(
                client,
                &ADD_LEAD,
                &[team.into(), org.into(), lead.into()],
                "adding the team's lead",
            );
        }
        team
    })
}

static INSERT_WORKSPACE: Statement = Statement::write(
    "INSERT INTO workspaces (organization_id, name, slug, visibility, team_id, created_by)
     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    &[
        types::UUID,
        types::TEXT,
        types::TEXT,
        types::TEXT,
        types::UUID,
        types::UUID,
    ],
);

static ADD_WORKSPACE_ADMIN: Statement = Statement::write(
    "INSERT INTO workspace_members (workspace_id, organization_id, user_id, role, added_by)
     VALUES ($1, $2, $3, 'admin', $3)",
    &[types::UUID, types::UUID, types::UUID],
);

static WORKSPACE_SLUG_TAKEN: Statement = Statement::read(
    "SELECT EXISTS (SELECT 1 FROM workspaces WHERE organization_id = $1 AND slug = $2)",
    &[types::UUID, types::TEXT],
);

static TEAM_IN_ORG: Statement = Statement::read(
    "SELECT EXISTS (SELECT 1 FROM teams WHERE id = $1 AND organization_id = $2)",
    &[types::UUID, types::UUID],
);

/// Creates a workspace in `org_id` (needs `teams.manage`), optionally under one of its teams;
/// the caller, if a member, becomes its admin.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn create_workspace(
    org_id: Option<Uuid>,
    name: Option<&str>,
    slug: Option<&str>,
    visibility: default!(Option<&str>, "'organization'"),
    team_id: default!(Option<Uuid>, "NULL"),
) -> Uuid {
    let org = errors::required(org_id, "org_id");
    let name = errors::required(name, "name").trim();
    let slug = errors::required(slug, "slug");
    let visibility = errors::required(visibility, "visibility");
    let action = "create_workspace";
    if !VISIBILITY.contains(&visibility) {
        errors::invalid_parameter(format!(
            "{action}: visibility must be one of organization, team, private"
        ));
    }
    if visibility == "team" && team_id.is_none() {
        errors::invalid_parameter(format!(
            "{action}: a workspace visible to a team needs team_id"
        ));
    }
    Spi::connect_mut(|client| {
        let access = caller_access(client, org, action);
        access.require("teams.manage", action);
        if let Some(team) = team_id {
            let in_org = spi::one::<bool>(
                client,
                &TEAM_IN_ORG,
                &[team.into(), org.into()],
                "reading the team",
            )
            .unwrap_or(false);
            if !in_org {
                errors::invalid_parameter(format!(
                    "{action}: team {team} is not a team of this organization"
                ));
            }
        }
        if spi::one::<bool>(
            client,
            &WORKSPACE_SLUG_TAKEN,
            &[org.into(), slug.into()],
            "reading workspaces",
        )
        .unwrap_or(false)
        {
            errors::unique_violation(format!(
                "{action}: this organization already has a workspace \"{slug}\""
            ));
        }
        let caller = auth_context::current_uid(client).filter(|_| access.is_member());
        let workspace = errors::required(
            spi::one_mut::<Uuid>(
                client,
                &INSERT_WORKSPACE,
                &[
                    org.into(),
                    name.into(),
                    slug.into(),
                    visibility.into(),
                    team_id.into(),
                    caller.into(),
                ],
                "creating the workspace",
            ),
            "workspace id",
        );
        if let Some(admin) = caller {
            spi::run(
                client,
                &ADD_WORKSPACE_ADMIN,
                &[workspace.into(), org.into(), admin.into()],
                "adding the workspace's admin",
            );
        }
        workspace
    })
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::testing::{act_as, error_of};
    use pgrx::prelude::*;

    const OWNER: &str = "00000000-0000-0000-0000-000000000c71";
    const LEAD: &str = "00000000-0000-0000-0000-000000000c72";
    const MEMBER: &str = "00000000-0000-0000-0000-000000000c73";

    fn org() -> String {
        Spi::run(&format!(
            "INSERT INTO auth.users (id, email) VALUES
               ('{OWNER}', 'owner-t@example.com'), ('{LEAD}', 'lead-t@example.com'), ('{MEMBER}', 'member-t@example.com')"
        ))
        .unwrap();
        let org = Spi::get_one::<pgrx::Uuid>(&format!(
            "INSERT INTO organizations (name, slug, owner_id) VALUES ('T', 'team-t', '{OWNER}') RETURNING id"
        ))
        .unwrap()
        .unwrap();
        Spi::run(&format!(
            "INSERT INTO org_subscriptions (organization_id, plan) VALUES ('{org}', 'business');
             INSERT INTO organization_members (organization_id, user_id, role) VALUES
               ('{org}', '{OWNER}', 'owner'), ('{org}', '{LEAD}', 'member'), ('{org}', '{MEMBER}', 'member')"
        ))
        .unwrap();
        org.to_string()
    }

    fn visible_teams() -> i64 {
        Spi::get_one::<i64>("SELECT count(*) FROM teams")
            .unwrap()
            .unwrap_or(0)
    }

    #[pg_test]
    fn a_secret_team_is_invisible_to_other_members_and_private_members_are_hidden() {
        let org = org();
        act_as(OWNER);
        let secret = Spi::get_one::<pgrx::Uuid>(&format!(
            "SELECT create_team('{org}', 'Skunkworks', 'secret')"
        ))
        .unwrap()
        .unwrap();
        let private = Spi::get_one::<pgrx::Uuid>(&format!(
            "SELECT create_team('{org}', 'Platform', 'private')"
        ))
        .unwrap()
        .unwrap();
        Spi::run(&format!(
            "INSERT INTO team_members (team_id, organization_id, user_id, role) VALUES
               ('{secret}', '{org}', '{LEAD}', 'lead'), ('{private}', '{org}', '{LEAD}', 'member')"
        ))
        .unwrap();
        act_as(MEMBER);
        assert_eq!(visible_teams(), 1, "the member sees the private team only");
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM team_members")
                .unwrap()
                .unwrap_or(0),
            0,
            "and none of its members"
        );
        act_as(LEAD);
        assert_eq!(visible_teams(), 2, "a member of the secret team sees it");
        // A lead manages their team's members; a plain member cannot.
        Spi::run(&format!(
            "INSERT INTO team_members (team_id, organization_id, user_id) VALUES ('{secret}', '{org}', '{MEMBER}')"
        ))
        .unwrap();
        act_as(MEMBER);
        assert_eq!(visible_teams(), 2);
        assert!(error_of(&format!(
            "INSERT INTO team_members (team_id, organization_id, user_id) VALUES ('{private}', '{org}', '{MEMBER}')"
        ))
        .is_some_and(|e| e.contains("row-level security")));
    }

    #[pg_test]
    fn leaving_the_organization_leaves_its_teams_and_workspaces() {
        let org = org();
        act_as(OWNER);
        let team = Spi::get_one::<pgrx::Uuid>(&format!(
            "SELECT create_team('{org}', 'Support', 'public')"
        ))
        .unwrap()
        .unwrap();
        let workspace = Spi::get_one::<pgrx::Uuid>(&format!(
            "SELECT create_workspace('{org}', 'Help desk', 'help-desk', 'team', '{team}')"
        ))
        .unwrap()
        .unwrap();
        Spi::run(&format!(
            "INSERT INTO team_members (team_id, organization_id, user_id) VALUES ('{team}', '{org}', '{MEMBER}');
             INSERT INTO workspace_members (workspace_id, organization_id, user_id) VALUES ('{workspace}', '{org}', '{MEMBER}');
             SELECT remove_member('{org}', '{MEMBER}')"
        ))
        .unwrap();
        Spi::run("RESET ROLE").unwrap();
        assert_eq!(
            Spi::get_one::<i64>(&format!(
                "SELECT (SELECT count(*) FROM team_members WHERE user_id = '{MEMBER}')
                      + (SELECT count(*) FROM workspace_members WHERE user_id = '{MEMBER}')"
            ))
            .unwrap(),
            Some(0)
        );
    }

    #[pg_test]
    #[should_panic(expected = "requires the permission teams.manage")]
    fn members_cannot_create_teams() {
        let org = org();
        act_as(MEMBER);
        Spi::run(&format!("SELECT create_team('{org}', 'Mine')")).unwrap();
    }
}
