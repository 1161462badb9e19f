//! Metering: usage events and their daily/monthly rollups (sql/metering.sql).
//!
//! Counting happens as events are written (src/counting.rs): an INSERT's triggers add its events to
//! `usage_counters`, in one row per bucket and writing backend (`usage_writer()`), so writers
//! of one organization never update the same row and never queue behind each other's commit.
//! Readers add `usage_counters` to the `usage_aggregations` rows: exact at once, and flat in
//! the size of the log. `aggregate_usage()` folds the counter rows into the rollups (rows
//! being written right now stay for the next run), and recounts distinct users of buckets that
//! corrections touched. `aggregate_usage(period, from, to)` recomputes whole months from the
//! raw events. Neither ever makes a writer wait for more than the fold's own commit.
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{JsonB, Uuid};
use serde_json::json;

use crate::auth_context;
#[allow(unused_imports)] // named in `requires` below
use crate::counting::{count_usage_events, forget_active_users};
use crate::errors;
use crate::function_memo;
use crate::spi::{self, types, Expect, Statement};

pgrx::extension_sql_file!(
    "../sql/metering.sql",
    name = "metering",
    requires = [
        "entitlements",
        recompute_usage_rollups,
        fold_usage,
        usage_writer,
        count_usage_events,
        forget_active_users
    ]
);

/// The counter row this backend writes: its backend slot, unique among running backends, so
/// no two concurrent writers share a row.
#[pg_extern(stable, parallel_safe)]
pub fn usage_writer() -> i32 {
    // SAFETY: reads this backend's slot number, set once at backend start.
    unsafe { pg_sys::MyBackendId }
}

/// A rollup period. Bucket boundaries are computed in SQL by `usage_bucket_start` and
/// `usage_bucket_end` (calendar days and months in UTC), the one place that formula lives.
#[derive(Clone, Copy)]
pub enum Period {
    Daily,
    Monthly,
}

impl Period {
    pub fn parse(text: &str, context: &str) -> Period {
        match text {
            "daily" => Period::Daily,
            "monthly" => Period::Monthly,
            other => errors::invalid_parameter(format!(
                "{context}: period must be 'daily' or 'monthly', not \"{other}\""
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Daily => "daily",
            Period::Monthly => "monthly",
        }
    }
}

static BUCKET: Statement = Statement::read(
    "SELECT usage_bucket_start($1, $2), usage_bucket_end($1, $2)",
    &[types::TEXT, types::TIMESTAMPTZ],
);

/// Bucket bounds asked of SQL lately: (pg_proc generation, period, start, end).
type KnownBucket = (u64, &'static str, pg_sys::TimestampTz, pg_sys::TimestampTz);

thread_local! {
    static KNOWN_BUCKETS: std::cell::RefCell<Vec<KnownBucket>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// How many bucket bounds a backend remembers (today's and this month's, and a few late ones).
const KNOWN_BUCKETS_CAP: usize = 8;

impl Period {
    /// Remembers bounds that `usage_bucket_start`/`usage_bucket_end` returned for this period
    /// while pg_proc was at `generation` (a statement that computed them anyway hands them
    /// over); nothing if pg_proc changed since.
    pub fn remember_bucket(
        self,
        generation: u64,
        start: pg_sys::TimestampTz,
        end: pg_sys::TimestampTz,
    ) {
        if function_memo::generation() != generation {
            return;
        }
        let period = self.as_str();
        KNOWN_BUCKETS.with(|k| {
            let mut k = k.borrow_mut();
            k.retain(|(g, p, s, _)| *g == generation && !(*p == period && *s == start));
            if k.len() >= KNOWN_BUCKETS_CAP {
                k.remove(0);
            }
            k.push((generation, period, start, end));
        });
    }

    /// `bucket(at)` if remembered, without asking SQL.
    pub fn known_bucket(
        self,
        at: pg_sys::TimestampTz,
    ) -> Option<(pg_sys::TimestampTz, pg_sys::TimestampTz)> {
        let period = self.as_str();
        let generation = function_memo::generation();
        KNOWN_BUCKETS.with(|k| {
            k.borrow()
                .iter()
                .find(|(g, p, start, end)| {
                    *g == generation && *p == period && *start <= at && at < *end
                })
                .map(|&(_, _, start, end)| (start, end))
        })
    }

    /// `[usage_bucket_start(period, at), usage_bucket_end(period, at))`: asked of SQL (the one
    /// place the formula lives) the first time, then remembered per backend until pg_proc
    /// changes. On a miss it runs a query in the function's context: callers that run as the
    /// caller switch to the owner's pinned search_path first.
    pub fn bucket(self, at: pg_sys::TimestampTz) -> (pg_sys::TimestampTz, pg_sys::TimestampTz) {
        if let Some(bounds) = self.known_bucket(at) {
            return bounds;
        }
        let period = self.as_str();
        let generation = function_memo::generation();
        let what = "computing a usage bucket";
        let at_tz = TimestampWithTimeZone::try_from(at)
            .unwrap_or_else(|e| errors::internal(what, format!("{e:?}")));
        let (start, end) = Spi::connect(|client| {
            let row = client
                .select(
                    BUCKET.prepared(client),
                    Some(1),
                    &[period.into(), at_tz.into()],
                )
                .and_then(|t| {
                    t.first()
                        .get_two::<TimestampWithTimeZone, TimestampWithTimeZone>()
                })
                .or_fail(what);
            match row {
                (Some(start), Some(end)) => (start.into(), end.into()),
                _ => errors::internal(what, "usage_bucket_start returned NULL"),
            }
        });
        self.remember_bucket(generation, start, end);
        (start, end)
    }
}

fn require_service_role_in_read_committed(function: &str) {
    if !auth_context::caller_is_service_role() {
        errors::insufficient_privilege(format!(
            "{function}: only the service role may aggregate usage"
        ));
    }
    // Both need snapshots newer than the locks they wait for.
    // SAFETY: reads the backend's current transaction isolation level.
    if unsafe { pg_sys::XactIsoLevel } >= pg_sys::XACT_REPEATABLE_READ as i32 {
        errors::raise(
            pgrx::PgSqlErrorCode::ERRCODE_INVALID_TRANSACTION_STATE,
            format!("{function}: run it in a READ COMMITTED transaction (under REPEATABLE READ or SERIALIZABLE its snapshot could miss events committed while it waits)"),
        );
    }
}

/// Serializes folds and recomputes.
static LOCK_STATE: Statement = Statement::write(
    "SELECT s.events_kept_since FROM usage_rollup_state s FOR UPDATE",
    &[],
);

/// Moves the counts of every counter row nobody is writing right now into the rollups, and
/// leaves the row at zero: its writer's next event updates it in place (no new row, no
/// foreign key check), and the table keeps the size the planner reads it by index at. Rows
/// locked by a writer are skipped: they are folded next time.
static FOLD: Statement = Statement::write(
    "WITH taken AS (
         SELECT l.ctid AS row_id, l.organization_id, l.event_type, l.period, l.period_start,
                l.total_quantity, l.event_count, l.unique_users
         FROM usage_counters l
         WHERE l.total_quantity <> 0 OR l.event_count <> 0 OR l.unique_users <> 0
         FOR UPDATE SKIP LOCKED
     ), zeroed AS (
         UPDATE usage_counters c SET total_quantity = 0, event_count = 0, unique_users = 0
         FROM taken t WHERE c.ctid = t.row_id
     ), sums AS (
         SELECT organization_id, event_type, period, period_start,
                sum(total_quantity) AS quantity, sum(event_count) AS events, sum(unique_users) AS users,
                count(*) AS counter_rows
         FROM taken GROUP BY 1, 2, 3, 4
     ), folded AS (
         INSERT INTO usage_aggregations AS a
             (organization_id, event_type, period, period_start, period_end, total_quantity, event_count, unique_users)
         SELECT organization_id, event_type, period, period_start, usage_bucket_end(period, period_start),
                quantity, events, users
         FROM sums
         ON CONFLICT (organization_id, event_type, period, period_start) DO UPDATE
             SET total_quantity = a.total_quantity + excluded.total_quantity,
                 event_count    = a.event_count + excluded.event_count,
                 unique_users   = a.unique_users + excluded.unique_users
     )
     SELECT coalesce(sum(counter_rows), 0)::bigint, count(*)::bigint FROM sums",
    &[],
);

// Zeroed rows of buckets that are over (only a late event would write them again).
static PRUNE_COUNTERS: Statement = Statement::write(
    "DELETE FROM usage_counters c
     WHERE c.ctid = ANY (ARRAY(SELECT l.ctid FROM usage_counters l
                               WHERE l.total_quantity = 0 AND l.event_count = 0 AND l.unique_users = 0
                                 AND l.period_start < usage_bucket_start(l.period, now())
                               FOR UPDATE SKIP LOCKED))",
    &[],
);

static LEFT_FOR_LATER: Statement = Statement::read(
    "SELECT count(*) FROM usage_counters
     WHERE total_quantity <> 0 OR event_count <> 0 OR unique_users <> 0",
    &[],
);

static TAKE_DIRTY: Statement = Statement::write(
    "DELETE FROM usage_dirty_buckets
     RETURNING organization_id, event_type, period, period_start",
    &[],
);

// Brings a bucket's distinct users back in line with its events after corrections (only the
// rows that differ are touched, so writers of other users never wait), then gives the rollup
// the users' count minus what the counters still hold. One snapshot for all of it.
static RECOUNT_ACTIVE_USERS: Statement = Statement::write(
    "WITH want AS (
         SELECT DISTINCT e.user_id FROM usage_events e
         WHERE e.organization_id = $1 AND e.event_type = $2 AND e.user_id IS NOT NULL
           AND e.occurred_at >= $4 AND e.occurred_at < usage_bucket_end($3, $4)
     ), stale AS (
         DELETE FROM usage_active_users u
         WHERE u.organization_id = $1 AND u.event_type = $2 AND u.period = $3 AND u.period_start = $4
           AND NOT EXISTS (SELECT 1 FROM want w WHERE w.user_id = u.user_id)
     ), missing AS (
         INSERT INTO usage_active_users (organization_id, event_type, period, period_start, user_id)
         SELECT $1, $2, $3, $4, w.user_id FROM want w
         ON CONFLICT DO NOTHING
     )
     INSERT INTO usage_aggregations AS a
         (organization_id, event_type, period, period_start, period_end, total_quantity, event_count, unique_users)
     SELECT $1, $2, $3, $4, usage_bucket_end($3, $4), 0, 0,
            (SELECT count(*) FROM want)
            - coalesce((SELECT sum(c.unique_users) FROM usage_counters c
                        WHERE c.organization_id = $1 AND c.event_type = $2
                          AND c.period = $3 AND c.period_start = $4), 0)
     WHERE EXISTS (SELECT 1 FROM organizations o WHERE o.id = $1)
     ON CONFLICT (organization_id, event_type, period, period_start) DO UPDATE
         SET unique_users = excluded.unique_users",
    &[types::UUID, types::TEXT, types::TEXT, types::TIMESTAMPTZ],
);

static STAMP: Statement = Statement::write("UPDATE usage_rollup_state SET folded_at = now()", &[]);

/// Folds the counts written since the last run into `usage_aggregations` (both periods), and
/// recounts the distinct users of buckets that corrections touched. Cost: the counter rows
/// (buckets × writing backends), not the events. Readers see the same usage before and after.
/// A writer whose counter row is being folded waits for this call's commit, so run it in a
/// transaction of its own (pg_cron does). Service role, READ COMMITTED.
#[pg_extern(volatile, security_definer, name = "aggregate_usage")]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn fold_usage() -> JsonB {
    require_service_role_in_read_committed("aggregate_usage");
    let what = "folding usage counters";
    Spi::connect_mut(|client| {
        client
            .update(LOCK_STATE.prepared(client), Some(1), &[])
            .or_fail(what);
        let table = client
            .update(FOLD.prepared(client), Some(1), &[])
            .or_fail(what);
        let row = table.first();
        let counter_rows: i64 = row.get(1).or_fail(what).unwrap_or(0);
        let buckets: i64 = row.get(2).or_fail(what).unwrap_or(0);
        spi::run(client, &PRUNE_COUNTERS, &[], what);
        let recounted = recount_dirty_buckets(client);
        spi::run(client, &STAMP, &[], what);
        let left = spi::one::<i64>(client, &LEFT_FOR_LATER, &[], what).unwrap_or(0);
        JsonB(json!({
            "counter_rows_folded": counter_rows,
            "buckets_updated": buckets,
            "counter_rows_left": left,
            "buckets_recounted": recounted,
        }))
    })
}

/// Distinct users of the buckets corrections touched, counted again from the events.
fn recount_dirty_buckets(client: &mut SpiClient<'_>) -> usize {
    let what = "recounting active users";
    let dirty: Vec<(Uuid, String, String, TimestampWithTimeZone)> = client
        .update(TAKE_DIRTY.prepared(client), None, &[])
        .or_fail(what)
        .filter_map(|r| {
            Some((
                r.get::<Uuid>(1).or_fail(what)?,
                r.get::<String>(2).or_fail(what)?,
                r.get::<String>(3).or_fail(what)?,
                r.get::<TimestampWithTimeZone>(4).or_fail(what)?,
            ))
        })
        .collect();
    for (org, event_type, period, start) in &dirty {
        let bucket = [
            (*org).into(),
            event_type.as_str().into(),
            period.as_str().into(),
            (*start).into(),
        ];
        spi::run(client, &RECOUNT_ACTIVE_USERS, &bucket, what);
    }
    dirty.len()
}

/// The window widened to whole months: both periods' buckets inside it are recomputed whole.
static MONTH_WINDOW: Statement = Statement::read(
    "SELECT usage_bucket_start('monthly', $1),
            CASE WHEN usage_bucket_start('monthly', $2) < $2 THEN usage_bucket_end('monthly', $2)
                 ELSE usage_bucket_start('monthly', $2) END",
    &[types::TIMESTAMPTZ, types::TIMESTAMPTZ],
);

static DELETE_WINDOW: Statement = Statement::write(
    "WITH a AS (DELETE FROM usage_aggregations WHERE period_start >= $1 AND period_start < $2)
     DELETE FROM usage_dirty_buckets WHERE period_start >= $1 AND period_start < $2",
    &[types::TIMESTAMPTZ, types::TIMESTAMPTZ],
);

// One snapshot for the events and the counters: each rollup row gets what the events say
// minus what the counters still hold, so rollup + counters = events, whoever writes meanwhile.
// The distinct users are brought in line with the events touching only the rows that differ
// (none, unless events were changed behind saas_core's back), so writers never wait for it.
static RECOMPUTE_WINDOW: Statement = Statement::write(
    "WITH ev AS (
         SELECT e.organization_id, e.event_type, e.user_id, e.quantity, p.period,
                usage_bucket_start(p.period, e.occurred_at) AS period_start
         FROM usage_events e CROSS JOIN (VALUES ('daily'), ('monthly')) AS p (period)
         WHERE e.occurred_at >= $1 AND e.occurred_at < $2
     ), want AS (
         SELECT DISTINCT organization_id, event_type, period, period_start, user_id FROM ev
         WHERE user_id IS NOT NULL
     ), stale AS (
         DELETE FROM usage_active_users u
         WHERE u.period_start >= $1 AND u.period_start < $2
           AND NOT EXISTS (SELECT 1 FROM want w
                           WHERE w.organization_id = u.organization_id AND w.event_type = u.event_type
                             AND w.period = u.period AND w.period_start = u.period_start AND w.user_id = u.user_id)
     ), missing AS (
         INSERT INTO usage_active_users (organization_id, event_type, period, period_start, user_id)
         SELECT * FROM want
         ON CONFLICT DO NOTHING
     ), from_events AS (
         SELECT organization_id, event_type, period, period_start,
                sum(quantity) AS quantity, count(*) AS events, count(DISTINCT user_id) AS users
         FROM ev GROUP BY 1, 2, 3, 4
     ), in_counters AS (
         SELECT organization_id, event_type, period, period_start,
                sum(total_quantity) AS quantity, sum(event_count) AS events, sum(unique_users) AS users
         FROM usage_counters
         WHERE period_start >= $1 AND period_start < $2
         GROUP BY 1, 2, 3, 4
     )
     INSERT INTO usage_aggregations
         (organization_id, event_type, period, period_start, period_end, total_quantity, event_count, unique_users)
     SELECT organization_id, event_type, period, period_start, usage_bucket_end(period, period_start),
            coalesce(f.quantity, 0) - coalesce(c.quantity, 0),
            coalesce(f.events, 0) - coalesce(c.events, 0),
            coalesce(f.users, 0) - coalesce(c.users, 0)
     FROM from_events f FULL JOIN in_counters c USING (organization_id, event_type, period, period_start)
     WHERE EXISTS (SELECT 1 FROM organizations o WHERE o.id = organization_id)",
    &[types::TIMESTAMPTZ, types::TIMESTAMPTZ],
);

/// Recomputes from the raw events every daily and monthly bucket of the months that
/// [start_time, end_time) touches, replacing what was there: a repair after corrections made
/// outside saas_core, never needed in normal operation. Running it twice gives the same rows.
/// `period` ('daily' or 'monthly') is kept from 0.1.0; both periods are recomputed. Events
/// Counts still in `usage_counters` stay there. Refused for months whose raw events retention
/// has dropped.
#[pg_extern(volatile, security_definer, name = "aggregate_usage")]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn recompute_usage_rollups(
    period: Option<&str>,
    start_time: Option<TimestampWithTimeZone>,
    end_time: Option<TimestampWithTimeZone>,
) -> i64 {
    Period::parse(errors::required(period, "period"), "aggregate_usage");
    let start_time = errors::required(start_time, "start_time");
    let end_time = errors::required(end_time, "end_time");
    if !start_time.is_finite() || !end_time.is_finite() {
        errors::invalid_parameter("aggregate_usage: the window must be finite");
    }
    if start_time >= end_time {
        errors::invalid_parameter("aggregate_usage: start_time must be before end_time");
    }
    require_service_role_in_read_committed("aggregate_usage");
    let what = "recomputing usage rollups";
    Spi::connect_mut(|client| {
        let state = client
            .update(LOCK_STATE.prepared(client), Some(1), &[])
            .or_fail(what);
        let kept_since: Option<TimestampWithTimeZone> = state.first().get(1).or_fail(what);
        let window = client
            .select(
                MONTH_WINDOW.prepared(client),
                Some(1),
                &[start_time.into(), end_time.into()],
            )
            .or_fail(what);
        let row = window.first();
        let (Some(lo), Some(hi)) = (
            row.get::<TimestampWithTimeZone>(1).or_fail(what),
            row.get::<TimestampWithTimeZone>(2).or_fail(what),
        ) else {
            errors::internal(what, "the bucket window is NULL")
        };
        if let Some(kept) = kept_since.filter(|k| lo < *k) {
            errors::invalid_parameter(format!(
                "aggregate_usage: the raw events before {kept} were dropped by retention; their rollups cannot be recomputed"
            ));
        }
        spi::run(client, &DELETE_WINDOW, &[lo.into(), hi.into()], what);
        spi::run(client, &RECOMPUTE_WINDOW, &[lo.into(), hi.into()], what) as i64
    })
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    const U: &str = "00000000-0000-0000-0000-0000000000f1";

    /// An organization with events dated inside the late-event window: two months ago would
    /// be outside it, so the test moves the window instead.
    fn org_with_events() -> String {
        Spi::run("UPDATE usage_settings SET late_event_window = interval '1 year', idempotency_key_retention = interval '1 year'").unwrap();
        let org = crate::testing::personal_organization_of_new_user(U, "m@example.com");
        Spi::run("SELECT create_usage_partitions()").unwrap();
        Spi::run(&format!(
            "INSERT INTO usage_events (organization_id, user_id, event_type, quantity, occurred_at) VALUES
               ('{org}', '{U}', 'api_call', 3, usage_bucket_start('monthly', now()) - interval '30 minutes'),
               ('{org}', '{U}', 'api_call', 4, usage_bucket_start('monthly', now()) + interval '30 minutes'),
               ('{org}', '{U}', 'api_call', 5, usage_bucket_start('monthly', now()) + interval '1 hour'),
               ('{org}', NULL,  'record_created', 1, usage_bucket_start('monthly', now()) + interval '1 hour')"
        ))
        .unwrap();
        org
    }

    fn rollup(org: &str, period: &str, start: &str, event: &str) -> Option<String> {
        Spi::get_one::<String>(&format!(
            "SELECT (SELECT total_quantity::text || '/' || event_count || '/' || unique_users FROM usage_aggregations
             WHERE organization_id = '{org}' AND period = '{period}' AND event_type = '{event}' AND period_start = {start})"
        ))
        .unwrap()
    }

    /// What readers see for a bucket: the rollup plus the counters not folded yet.
    fn counted(org: &str, period: &str, start: &str, event: &str) -> String {
        Spi::get_one::<String>(&format!(
            "SELECT sum(q)::text || '/' || sum(n) || '/' || sum(u) FROM (
               SELECT total_quantity, event_count, unique_users FROM usage_aggregations
               WHERE organization_id = '{org}' AND period = '{period}' AND event_type = '{event}' AND period_start = {start}
               UNION ALL
               SELECT total_quantity, event_count, unique_users FROM usage_counters
               WHERE organization_id = '{org}' AND period = '{period}' AND event_type = '{event}' AND period_start = {start}
             ) b (q, n, u)"
        ))
        .unwrap()
        .unwrap_or_default()
    }

    /// Counter rows holding counts not folded yet.
    fn counter_rows() -> i64 {
        Spi::get_one::<i64>(
            "SELECT count(*) FROM usage_counters WHERE total_quantity <> 0 OR event_count <> 0",
        )
        .unwrap()
        .unwrap()
    }

    const THIS_MONTH: &str = "usage_bucket_start('monthly', now())";
    const LAST_MONTH: &str =
        "usage_bucket_start('monthly', usage_bucket_start('monthly', now()) - interval '1 day')";
    const FIRST_DAY: &str = "usage_bucket_start('daily', usage_bucket_start('monthly', now()))";

    #[pg_test]
    fn events_are_counted_in_their_utc_buckets_as_they_are_written() {
        Spi::run("SET LOCAL TimeZone = 'America/New_York'").unwrap();
        let org = org_with_events();
        assert_eq!(counted(&org, "monthly", LAST_MONTH, "api_call"), "3/1/1");
        assert_eq!(counted(&org, "monthly", THIS_MONTH, "api_call"), "9/2/1");
        assert_eq!(counted(&org, "daily", FIRST_DAY, "record_created"), "1/1/0");
        // Nothing is folded yet: the counts are all in the counter rows.
        assert_eq!(rollup(&org, "monthly", THIS_MONTH, "api_call"), None);
    }

    #[pg_test]
    fn folding_moves_counters_into_rollups_and_reads_do_not_change() {
        Spi::run("SET LOCAL TimeZone = 'America/New_York'").unwrap();
        let org = org_with_events();
        Spi::run("SELECT aggregate_usage()").unwrap();
        assert_eq!(counter_rows(), 0);
        assert_eq!(
            rollup(&org, "monthly", LAST_MONTH, "api_call").as_deref(),
            Some("3/1/1")
        );
        assert_eq!(
            rollup(&org, "monthly", THIS_MONTH, "api_call").as_deref(),
            Some("9/2/1")
        );
        assert_eq!(
            rollup(&org, "daily", FIRST_DAY, "record_created").as_deref(),
            Some("1/1/0")
        );
        // Folding again adds nothing; a new event of a known user adds to the sum, not the users.
        Spi::run("SELECT aggregate_usage()").unwrap();
        Spi::run(&format!(
            "INSERT INTO usage_events (organization_id, user_id, event_type, quantity) VALUES ('{org}', '{U}', 'api_call', 1)"
        ))
        .unwrap();
        assert_eq!(counted(&org, "monthly", THIS_MONTH, "api_call"), "10/3/1");
        Spi::run("SELECT aggregate_usage()").unwrap();
        Spi::run("SELECT aggregate_usage()").unwrap();
        assert_eq!(
            rollup(&org, "monthly", THIS_MONTH, "api_call").as_deref(),
            Some("10/3/1")
        );
    }

    #[pg_test]
    fn corrections_count_at_once_and_recounts_follow() {
        let org = org_with_events();
        Spi::run("SELECT aggregate_usage()").unwrap();
        Spi::run(&format!(
            "DELETE FROM usage_events WHERE organization_id = '{org}' AND quantity = 5"
        ))
        .unwrap();
        assert_eq!(counted(&org, "monthly", THIS_MONTH, "api_call"), "4/1/1");
        Spi::run(&format!(
            "UPDATE usage_events SET quantity = 40, user_id = NULL WHERE organization_id = '{org}' AND quantity = 4"
        ))
        .unwrap();
        assert_eq!(counted(&org, "monthly", THIS_MONTH, "api_call"), "40/1/1");
        // The distinct-user count is recounted by the next fold.
        Spi::run("SELECT aggregate_usage()").unwrap();
        assert_eq!(
            rollup(&org, "monthly", THIS_MONTH, "api_call").as_deref(),
            Some("40/1/0")
        );
        assert_eq!(counted(&org, "monthly", THIS_MONTH, "api_call"), "40/1/0");
    }

    #[pg_test]
    fn re_aggregating_a_window_replaces_instead_of_double_counting() {
        let org = org_with_events();
        Spi::run("SELECT aggregate_usage()").unwrap();
        Spi::run(&format!(
            "UPDATE usage_aggregations SET total_quantity = 999 WHERE organization_id = '{org}'"
        ))
        .unwrap();
        // An event not folded yet: its count stays in the counters, not twice.
        Spi::run(&format!(
            "INSERT INTO usage_events (organization_id, user_id, event_type, quantity) VALUES ('{org}', '{U}', 'api_call', 1)"
        ))
        .unwrap();
        let window = "usage_bucket_start('monthly', now()), usage_bucket_start('monthly', now()) + interval '1 day'";
        let first =
            Spi::get_one::<i64>(&format!("SELECT aggregate_usage('daily', {window})")).unwrap();
        let second =
            Spi::get_one::<i64>(&format!("SELECT aggregate_usage('daily', {window})")).unwrap();
        assert_eq!(first, second);
        assert_eq!(counted(&org, "monthly", THIS_MONTH, "api_call"), "10/3/1");
        assert_eq!(
            rollup(&org, "daily", FIRST_DAY, "api_call").as_deref(),
            Some("9/2/1")
        );
        // Last month was outside the window and keeps its (corrupted) value.
        assert_eq!(
            rollup(&org, "monthly", LAST_MONTH, "api_call").as_deref(),
            Some("999/1/1")
        );
        Spi::run("SELECT aggregate_usage()").unwrap();
        assert_eq!(
            rollup(&org, "monthly", THIS_MONTH, "api_call").as_deref(),
            Some("10/3/1")
        );
    }

    #[pg_test(error = "aggregate_usage: period must be 'daily' or 'monthly', not \"hourly\"")]
    fn bad_period() {
        Spi::run("SELECT aggregate_usage('hourly', now() - interval '1 day', now())").unwrap();
    }

    #[pg_test]
    fn absurd_quantities_are_refused_and_leave_the_meters_alone() {
        let org = org_with_events();
        Spi::run(&format!(
            "DO $$
             DECLARE q text; refused int := 0;
             BEGIN
               FOREACH q IN ARRAY ARRAY['NaN', 'Infinity', '-Infinity', '1e13', '-1e13', '0'] LOOP
                 BEGIN
                   INSERT INTO usage_events (organization_id, event_type, quantity)
                   VALUES ('{org}', 'api_call', q::numeric);
                 EXCEPTION WHEN check_violation THEN refused := refused + 1;
                 END;
               END LOOP;
               IF refused <> 6 THEN RAISE EXCEPTION 'only % of 6 refused', refused; END IF;
             END $$"
        ))
        .unwrap();
        Spi::run(&format!(
            "INSERT INTO usage_events (organization_id, event_type, quantity) VALUES ('{org}', 'api_call', 1e12)"
        ))
        .unwrap();
        assert_eq!(
            counted(&org, "monthly", THIS_MONTH, "api_call"),
            "1000000000009/3/1"
        );
    }

    #[pg_test(error = "aggregate_usage: start_time must be before end_time")]
    fn empty_window() {
        Spi::run("SELECT aggregate_usage('daily', now(), now())").unwrap();
    }
}
