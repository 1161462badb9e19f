//! The raw usage log over time (sql/retention.sql): month partitions created ahead, expired
//! ones dropped whole, idempotency keys pruned, and the schedule that runs it all (pg_cron).
//!
//! Partitions are ordinary tables, not members of the extension: pg_dump dumps them with their
//! rows like any table, and DROP EXTENSION drops them with their parent.
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::JsonB;
use serde_json::json;

use crate::auth_context;
use crate::backup;
use crate::errors;
use crate::spi::{self, types, Expect, Statement};

pgrx::extension_sql_file!(
    "../sql/retention.sql",
    name = "retention",
    requires = [
        "metering",
        create_usage_partition,
        create_usage_partitions,
        apply_usage_retention,
        schedule_usage_maintenance,
        unschedule_usage_maintenance,
    ]
);

fn require_service_role(function: &str) {
    if !auth_context::caller_is_service_role() {
        errors::insufficient_privilege(format!(
            "{function}: only the service role maintains the usage log"
        ));
    }
}

static PARTITION_PLAN: Statement = Statement::read(
    "SELECT format('%I.%I', n.nspname, 'usage_events_' || to_char(m.start AT TIME ZONE 'UTC', 'YYYY_MM')),
            format('%I.%I', n.nspname, 'usage_events'),
            format('%L', m.start), format('%L', usage_bucket_end('monthly', m.start)),
            to_regclass(format('%I.%I', n.nspname, 'usage_events_' || to_char(m.start AT TIME ZONE 'UTC', 'YYYY_MM'))) IS NULL,
            to_char(m.start AT TIME ZONE 'UTC', 'YYYY-MM'),
            e.extowner::regrole::text
     FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace,
          LATERAL (SELECT usage_bucket_start('monthly', $1) AS start) m
     WHERE e.extname = 'saas_core'",
    &[types::TIMESTAMPTZ],
);

/// Creates the partition of `usage_events` for the UTC month `month` falls in, if missing, with
/// its primary key (id, occurred_at) and indexes: owned by the extension's owner, no privileges
/// for the API roles (they read through `usage_events`), row level security on. Returns its
/// name. Service role.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn create_usage_partition(month: Option<TimestampWithTimeZone>) -> String {
    let month = errors::required(month, "month");
    if !month.is_finite() {
        errors::invalid_parameter("create_usage_partition: month must be finite");
    }
    require_service_role("create_usage_partition");
    Spi::connect_mut(|client| ensure_partition(client, month).0)
}

/// Returns the partition's name and whether it was created now.
fn ensure_partition(client: &mut SpiClient<'_>, month: TimestampWithTimeZone) -> (String, bool) {
    let what = "creating a usage partition";
    let plan = client
        .select(PARTITION_PLAN.prepared(client), Some(1), &[month.into()])
        .or_fail(what);
    let row = plan.first();
    let text = |i: usize| -> String { row.get::<String>(i).or_fail(what).unwrap_or_default() };
    let (name, parent, from, to, label, owner) =
        (text(1), text(2), text(3), text(4), text(6), text(7));
    let missing: bool = row.get(5).or_fail(what).unwrap_or(false);
    if !missing {
        return (name, false);
    }
    // SAFETY: reads the extension-script state of this backend.
    let in_script = unsafe { pg_sys::creating_extension };
    let mut ddl = vec![
        format!("CREATE TABLE {name} PARTITION OF {parent} FOR VALUES FROM ({from}) TO ({to})"),
        format!("ALTER TABLE {name} ADD PRIMARY KEY (id, occurred_at)"),
        // Members' reads (RLS picks their organizations), recounts and recomputes of a bucket.
        format!("CREATE INDEX ON {name} (organization_id, event_type, occurred_at)"),
        // ON DELETE SET NULL from users.
        format!("CREATE INDEX ON {name} (user_id) WHERE user_id IS NOT NULL"),
        // Recomputing ranges of time: rows arrive roughly in time order.
        format!("CREATE INDEX ON {name} USING brin (occurred_at)"),
        // Like every object of the extension, it belongs to the extension's owner (an install
        // or update script may run as another role: see sql/finalize.sql).
        format!("ALTER TABLE {name} OWNER TO {owner}"),
        format!("REVOKE ALL ON {name} FROM PUBLIC, anon, authenticated, service_role"),
        format!("ALTER TABLE {name} ENABLE ROW LEVEL SECURITY"),
        format!(
            "COMMENT ON TABLE {name} IS 'usage_events of {label} (UTC). Created by create_usage_partition(); dropped by apply_usage_retention().'"
        ),
    ];
    if in_script {
        // Created by an install or update script: still not the extension's.
        ddl.push(format!("ALTER EXTENSION saas_core DROP TABLE {name}"));
    }
    for statement in ddl {
        client.update(&statement, None, &[]).or_fail(what);
    }
    (name, true)
}

static MONTHS_TO_HAVE: Statement = Statement::read(
    // Month arithmetic in UTC, whatever the session's time zone.
    "SELECT m AT TIME ZONE 'UTC'
     FROM usage_settings s,
          generate_series(usage_bucket_start('monthly', now() - s.late_event_window) AT TIME ZONE 'UTC',
                          (usage_bucket_start('monthly', now()) AT TIME ZONE 'UTC')
                              + make_interval(months => coalesce($1, s.partitions_ahead)),
                          interval '1 month') AS m",
    &[types::INT4],
);

/// Makes sure partitions exist from the start of the late-event window to `months_ahead`
/// months from now (default `usage_settings.partitions_ahead`). Returns how many it created.
/// A restore brings the source's partitions: then it creates none. Service role.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn create_usage_partitions(months_ahead: default!(Option<i32>, "NULL")) -> i32 {
    if let Some(m) = months_ahead.filter(|m| !(0..=120).contains(m)) {
        errors::invalid_parameter(format!(
            "create_usage_partitions: months_ahead must be 0 to 120, not {m}"
        ));
    }
    require_service_role("create_usage_partitions");
    if backup::restore_in_progress() {
        return 0;
    }
    Spi::connect_mut(|client| {
        let months: Vec<TimestampWithTimeZone> = client
            .select(
                MONTHS_TO_HAVE.prepared(client),
                None,
                &[months_ahead.into()],
            )
            .or_fail("listing months")
            .filter_map(|r| r.get::<TimestampWithTimeZone>(1).or_fail("listing months"))
            .collect();
        months
            .into_iter()
            .filter(|m| ensure_partition(client, *m).1)
            .count() as i32
    })
}

static EXPIRED_PARTITIONS: Statement = Statement::read(
    "SELECT format('%I.%I', n.nspname, c.relname), c.relname::text,
            (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz AS upper
     FROM pg_inherits i
     JOIN pg_class c ON c.oid = i.inhrelid
     JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE i.inhparent = 'usage_events'::regclass
     ORDER BY upper",
    &[],
);

static RETENTION_SETTINGS: Statement = Statement::read(
    "SELECT usage_bucket_start('monthly', now() - s.event_retention), s.event_retention IS NOT NULL
     FROM usage_settings s",
    &[],
);

static PRUNE_KEYS: Statement = Statement::write(
    "DELETE FROM usage_idempotency_keys
     WHERE created_at < now() - (SELECT idempotency_key_retention FROM usage_settings)",
    &[],
);

// Buckets no event can reach any more (older than the late-event window) need no user list.
static PRUNE_ACTIVE_USERS: Statement = Statement::write(
    "DELETE FROM usage_active_users u
     USING usage_settings s
     WHERE (u.period = 'daily' AND u.period_start < usage_bucket_start('daily', now() - s.late_event_window))
        OR (u.period = 'monthly' AND u.period_start < usage_bucket_start('monthly', now() - s.late_event_window))",
    &[],
);

static MOVE_HORIZON: Statement = Statement::write(
    "UPDATE usage_rollup_state SET events_kept_since = greatest(events_kept_since, $1)",
    &[types::TIMESTAMPTZ],
);

/// Drops the partitions of `usage_events` whose whole month is older than
/// `usage_settings.event_retention` (nothing when it is NULL); their counts stay in the rollups
/// (events are counted as they are written). Prunes idempotency keys older than
/// `idempotency_key_retention` and the active-user lists of buckets no event can reach.
/// Service role.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn apply_usage_retention() -> JsonB {
    require_service_role("apply_usage_retention");
    let what = "applying usage retention";
    Spi::connect_mut(|client| {
        let settings = client
            .select(RETENTION_SETTINGS.prepared(client), Some(1), &[])
            .or_fail(what);
        let row = settings.first();
        let cutoff: Option<TimestampWithTimeZone> = row.get(1).or_fail(what);
        let enabled: bool = row.get(2).or_fail(what).unwrap_or(false);
        let mut dropped = Vec::new();
        if let (true, Some(cutoff)) = (enabled, cutoff) {
            let partitions: Vec<(String, String, Option<TimestampWithTimeZone>)> = client
                .select(EXPIRED_PARTITIONS.prepared(client), None, &[])
                .or_fail(what)
                .filter_map(|r| {
                    Some((
                        r.get::<String>(1).or_fail(what)?,
                        r.get::<String>(2).or_fail(what)?,
                        r.get::<TimestampWithTimeZone>(3).or_fail(what),
                    ))
                })
                .collect();
            for (qualified, name, upper) in partitions {
                if upper.is_none_or(|u| u > cutoff) {
                    continue;
                }
                client
                    .update(&format!("DROP TABLE {qualified}"), None, &[])
                    .or_fail(what);
                dropped.push(name);
            }
            spi::run(client, &MOVE_HORIZON, &[cutoff.into()], what);
        }
        let keys = spi::run(client, &PRUNE_KEYS, &[], what);
        let users = spi::run(client, &PRUNE_ACTIVE_USERS, &[], what);
        JsonB(json!({
            "dropped_partitions": dropped,
            "idempotency_keys_deleted": keys,
            "active_user_rows_deleted": users,
        }))
    })
}

static CRON: Statement = Statement::read(
    "SELECT EXISTS (SELECT 1 FROM pg_extension c WHERE c.extname = 'pg_cron'),
            format('%I', n.nspname), current_database()::text
     FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'saas_core'",
    &[],
);

fn cron_and_schema(client: &SpiClient<'_>, function: &str) -> (String, String) {
    let table = client
        .select(CRON.prepared(client), Some(1), &[])
        .or_fail("looking for pg_cron");
    let row = table.first();
    let present: bool = row.get(1).or_fail("looking for pg_cron").unwrap_or(false);
    let schema: String = row
        .get(2)
        .or_fail("looking for pg_cron")
        .unwrap_or_default();
    let database: String = row
        .get(3)
        .or_fail("looking for pg_cron")
        .unwrap_or_default();
    if !present {
        errors::raise_with_hint(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("{function}: pg_cron is not installed in this database"),
            "Install pg_cron (CREATE EXTENSION pg_cron), or run as the service role elsewhere: every minute \
             SELECT aggregate_usage(); once a day SELECT create_usage_partitions(); SELECT apply_usage_retention();",
        );
    }
    (schema, database)
}

static SCHEDULE: Statement = Statement::write(
    "SELECT cron.schedule($1, $2, $3)",
    &[types::TEXT, types::TEXT, types::TEXT],
);

static UNSCHEDULE: Statement = Statement::write(
    "SELECT count(cron.unschedule(j.jobid)) FROM cron.job j WHERE j.jobname = ANY ($1)",
    &[types::TEXT_ARRAY],
);

fn job_names(database: &str) -> [String; 2] {
    [
        format!("saas_core usage rollups ({database})"),
        format!("saas_core usage partitions and retention ({database})"),
    ]
}

/// Registers the metering maintenance with pg_cron, run as the service role: folding new events
/// into the rollups (`rollups`, default every minute), and creating partitions ahead then
/// applying retention (`maintenance`, default daily at 03:17). Calling it again replaces the
/// jobs. Returns the jobs. Service role; pg_cron must be installed in this database.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn schedule_usage_maintenance(
    rollups: default!(Option<&str>, "'* * * * *'"),
    maintenance: default!(Option<&str>, "'17 3 * * *'"),
) -> JsonB {
    let rollups = errors::required(rollups, "rollups");
    let maintenance = errors::required(maintenance, "maintenance");
    require_service_role("schedule_usage_maintenance");
    Spi::connect_mut(|client| {
        let (schema, database) = cron_and_schema(client, "schedule_usage_maintenance");
        let [rollup_job, maintenance_job] = job_names(&database);
        let rollup_command = format!("SET ROLE service_role; SELECT {schema}.aggregate_usage();");
        let maintenance_command = format!(
            "SET ROLE service_role; SELECT {schema}.create_usage_partitions(); SELECT {schema}.apply_usage_retention();"
        );
        let mut jobs = Vec::new();
        for (name, schedule, command) in [
            (&rollup_job, rollups, &rollup_command),
            (&maintenance_job, maintenance, &maintenance_command),
        ] {
            let id = spi::one_mut::<i64>(
                client,
                &SCHEDULE,
                &[
                    name.as_str().into(),
                    schedule.into(),
                    command.as_str().into(),
                ],
                "scheduling with pg_cron",
            );
            jobs.push(
                json!({"jobid": id, "jobname": name, "schedule": schedule, "command": command}),
            );
        }
        JsonB(json!(jobs))
    })
}

/// Removes the jobs `schedule_usage_maintenance` registered. Returns how many. Service role.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn unschedule_usage_maintenance() -> i64 {
    require_service_role("unschedule_usage_maintenance");
    Spi::connect_mut(|client| {
        let (_, database) = cron_and_schema(client, "unschedule_usage_maintenance");
        let names: Vec<String> = job_names(&database).to_vec();
        spi::one_mut::<i64>(client, &UNSCHEDULE, &[names.into()], "unscheduling").unwrap_or(0)
    })
}
