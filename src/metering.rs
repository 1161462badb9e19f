//! Metering: usage events and their daily/monthly rollups (sql/metering.sql).
//!
//! Writers never touch the rollups: an event is one INSERT into its month's partition, so
//! writers of one organization never queue behind each other. `aggregate_usage()` folds
//! events into `usage_aggregations` in write order (`seq`), and readers add the events not
//! folded yet (`seq > folded_through`, an index range per meter) to the rollup rows: exact, and
//! flat in the size of the log as long as the fold keeps up.
//!
//! Folding exactly: every event's `seq` is drawn after its transaction got an id (see
//! `usage_next_event_seq`). So once the transactions that were running when `seq` reached N
//! have ended, no event with `seq <= N` can still appear: the fold reads N, takes the list of
//! running transactions, waits for them (never blocking anyone), then folds `(folded_through,
//! N]`. Values of `seq` travel with the rows through pg_dump, unlike transaction ids.
use std::time::{Duration, Instant};

use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{JsonB, Uuid};
use serde_json::json;

use crate::auth_context;
use crate::errors;
use crate::spi::{self, types, Expect, Statement};

pgrx::extension_sql_file!(
    "../sql/metering.sql",
    name = "metering",
    requires = ["entitlements", recompute_usage_rollups, fold_usage]
);

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

/// Serializes folds and recomputes; corrections (sql/metering.sql) wait for it too.
static LOCK_STATE: Statement = Statement::write(
    "SELECT s.folded_through, st.fold_wait_ms, s.events_kept_since
     FROM usage_rollup_state s,
          LATERAL (SELECT (extract(epoch FROM fold_wait) * 1000)::bigint AS fold_wait_ms FROM usage_settings) st
     FOR UPDATE OF s",
    &[],
);

static SEQ_NOW: Statement = Statement::read(
    "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM usage_event_seq",
    &[],
);

// Transactions that may still commit an event numbered up to the sequence value just read:
// those writing usage_events now. Each took its lock on the table before numbering a row, and
// holds it to its end, so the lock table (read after the sequence) names them all, by the
// transaction id each holds a lock on. Other transactions, however long, are not waited for.
static RUNNING_NOW: Statement = Statement::write(
    "SELECT ARRAY(
         SELECT DISTINCT t.transactionid::text::bigint
         FROM pg_locks r
         JOIN pg_locks t ON t.virtualtransaction = r.virtualtransaction
                        AND t.locktype = 'transactionid' AND t.mode = 'ExclusiveLock' AND t.granted
         WHERE r.locktype = 'relation' AND r.mode = 'RowExclusiveLock' AND r.granted
           AND r.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
           AND r.relation IN (SELECT 'usage_events'::regclass
                              UNION ALL
                              SELECT i.inhrelid FROM pg_inherits i WHERE i.inhparent = 'usage_events'::regclass))",
    &[],
);

static STILL_RUNNING: Statement = Statement::write(
    "SELECT count(*) FROM unnest($1::bigint[]) AS x (xid)
     WHERE pg_xact_status(x.xid::text::xid8) = 'in progress'",
    &[types::INT8_ARRAY],
);

static PAUSE: Statement = Statement::write("SELECT pg_sleep(0.005)", &[]);

/// Folds events with seq in ($1, $2] into both periods' buckets and their active users.
static FOLD: Statement = Statement::write(
    "WITH ev AS (
         SELECT e.organization_id, e.event_type, e.user_id, e.quantity, p.period,
                usage_bucket_start(p.period, e.occurred_at) AS period_start,
                usage_bucket_end(p.period, e.occurred_at) AS period_end
         FROM usage_events e CROSS JOIN (VALUES ('daily'), ('monthly')) AS p (period)
         WHERE e.seq > $1 AND e.seq <= $2
     ), new_users AS (
         INSERT INTO usage_active_users (organization_id, event_type, period, period_start, user_id)
         SELECT DISTINCT organization_id, event_type, period, period_start, user_id FROM ev
         WHERE user_id IS NOT NULL
         ON CONFLICT DO NOTHING
         RETURNING organization_id, event_type, period, period_start
     ), users_per_bucket AS (
         SELECT organization_id, event_type, period, period_start, count(*) AS users
         FROM new_users GROUP BY 1, 2, 3, 4
     ), sums AS (
         SELECT organization_id, event_type, period, period_start, period_end,
                sum(quantity) AS quantity, count(*) AS events
         FROM ev GROUP BY 1, 2, 3, 4, 5
     )
     INSERT INTO usage_aggregations AS a
         (organization_id, event_type, period, period_start, period_end, total_quantity, event_count, unique_users)
     SELECT s.organization_id, s.event_type, s.period, s.period_start, s.period_end,
            s.quantity, s.events, coalesce(u.users, 0)
     FROM sums s
     LEFT JOIN users_per_bucket u USING (organization_id, event_type, period, period_start)
     ON CONFLICT (organization_id, event_type, period, period_start) DO UPDATE
         SET total_quantity = a.total_quantity + excluded.total_quantity,
             event_count    = a.event_count + excluded.event_count,
             unique_users   = a.unique_users + excluded.unique_users",
    &[types::INT8, types::INT8],
);

static TAKE_DIRTY: Statement = Statement::write(
    "DELETE FROM usage_dirty_buckets
     RETURNING organization_id, event_type, period, period_start",
    &[],
);

static CLEAR_ACTIVE_USERS: Statement = Statement::write(
    "DELETE FROM usage_active_users
     WHERE organization_id = $1 AND event_type = $2 AND period = $3 AND period_start = $4",
    &[types::UUID, types::TEXT, types::TEXT, types::TIMESTAMPTZ],
);

static RECOUNT_ACTIVE_USERS: Statement = Statement::write(
    "WITH fresh AS (
         INSERT INTO usage_active_users (organization_id, event_type, period, period_start, user_id)
         SELECT DISTINCT $1::uuid, $2::text, $3::text, $4::timestamptz, e.user_id
         FROM usage_events e
         WHERE e.organization_id = $1 AND e.event_type = $2 AND e.user_id IS NOT NULL
           AND e.occurred_at >= $4 AND e.occurred_at < usage_bucket_end($3, $4) AND e.seq <= $5
         RETURNING 1
     )
     UPDATE usage_aggregations SET unique_users = (SELECT count(*) FROM fresh)
     WHERE organization_id = $1 AND event_type = $2 AND period = $3 AND period_start = $4",
    &[
        types::UUID,
        types::TEXT,
        types::TEXT,
        types::TIMESTAMPTZ,
        types::INT8,
    ],
);

static ADVANCE: Statement = Statement::write(
    "UPDATE usage_rollup_state SET folded_through = $1, folded_at = now()",
    &[types::INT8],
);

/// The 64-bit ids of the transactions writing usage_events now, other than this one.
fn writers_in_flight(client: &mut SpiClient<'_>, what: &str) -> Vec<i64> {
    // SAFETY: reads the shared next-xid counter (takes its own lock).
    let next = unsafe { pg_sys::ReadNextFullTransactionId() }.value;
    let (epoch, low) = (next >> 32, next & 0xFFFF_FFFF);
    spi::one_mut::<Vec<i64>>(client, &RUNNING_NOW, &[], what)
        .unwrap_or_default()
        .into_iter()
        .filter(|xid| {
            // SAFETY: asks whether an xid belongs to this backend's (sub)transactions.
            unsafe {
                !pg_sys::TransactionIdIsCurrentTransactionId(pg_sys::TransactionId::from(
                    *xid as u32,
                ))
            }
        })
        // A running xid is at most 2^31 behind the next one: it is in this epoch or the last.
        .map(|xid| {
            let xid = xid as u64;
            let epoch = if xid <= low {
                epoch
            } else {
                epoch.saturating_sub(1)
            };
            ((epoch << 32) | xid) as i64
        })
        .collect()
}

/// Folds every event written since the last run into `usage_aggregations` (both periods),
/// and recounts the distinct users of buckets that corrections touched. Cost: the events
/// written since, not the log. Never blocks writers; waits at most `usage_settings.fold_wait`
/// for transactions still writing, and otherwise folds next time (`"deferred": true`).
/// Service role, READ COMMITTED.
#[pg_extern(volatile, security_definer, name = "aggregate_usage")]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn fold_usage() -> JsonB {
    require_service_role_in_read_committed("aggregate_usage");
    let what = "folding usage events";
    Spi::connect_mut(|client| {
        let state = client
            .update(LOCK_STATE.prepared(client), Some(1), &[])
            .or_fail(what);
        let row = state.first();
        let folded: i64 = row.get(1).or_fail(what).unwrap_or(0);
        let wait_ms: i64 = row.get(2).or_fail(what).unwrap_or(5000);
        let target = spi::one::<i64>(client, &SEQ_NOW, &[], what).unwrap_or(0);
        let running = writers_in_flight(client, what);
        let started = Instant::now();
        let mut deferred = false;
        if target > folded && !running.is_empty() {
            loop {
                let left = spi::one::<i64>(client, &STILL_RUNNING, &[running.clone().into()], what)
                    .unwrap_or(0);
                if left == 0 {
                    break;
                }
                if started.elapsed() >= Duration::from_millis(wait_ms.max(0) as u64) {
                    deferred = true;
                    break;
                }
                spi::run(client, &PAUSE, &[], what);
            }
        }
        let (rollup_rows, through) = if target > folded && !deferred {
            let rows = spi::run(client, &FOLD, &[folded.into(), target.into()], what);
            spi::run(client, &ADVANCE, &[target.into()], what);
            (rows, target)
        } else {
            (0, folded)
        };
        let recounted = recount_dirty_buckets(client, through);
        JsonB(json!({
            "folded_through": through,
            "previously_folded_through": folded,
            "rollup_rows_written": rollup_rows,
            "buckets_recounted": recounted,
            "waited_ms": started.elapsed().as_millis() as u64,
            "deferred": deferred,
        }))
    })
}

/// Distinct users of the buckets corrections touched, counted again from the folded events.
fn recount_dirty_buckets(client: &mut SpiClient<'_>, through: i64) -> usize {
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
        spi::run(client, &CLEAR_ACTIVE_USERS, &bucket, what);
        spi::run(
            client,
            &RECOUNT_ACTIVE_USERS,
            &[
                (*org).into(),
                event_type.as_str().into(),
                period.as_str().into(),
                (*start).into(),
                through.into(),
            ],
            what,
        );
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
    "WITH a AS (DELETE FROM usage_aggregations WHERE period_start >= $1 AND period_start < $2),
          u AS (DELETE FROM usage_active_users WHERE period_start >= $1 AND period_start < $2)
     DELETE FROM usage_dirty_buckets WHERE period_start >= $1 AND period_start < $2",
    &[types::TIMESTAMPTZ, types::TIMESTAMPTZ],
);

static RECOMPUTE_WINDOW: Statement = Statement::write(
    "WITH ev AS (
         SELECT e.organization_id, e.event_type, e.user_id, e.quantity, p.period,
                usage_bucket_start(p.period, e.occurred_at) AS period_start,
                usage_bucket_end(p.period, e.occurred_at) AS period_end
         FROM usage_events e CROSS JOIN (VALUES ('daily'), ('monthly')) AS p (period)
         WHERE e.occurred_at >= $1 AND e.occurred_at < $2 AND e.seq <= $3
     ), users AS (
         INSERT INTO usage_active_users (organization_id, event_type, period, period_start, user_id)
         SELECT DISTINCT organization_id, event_type, period, period_start, user_id FROM ev
         WHERE user_id IS NOT NULL
     )
     INSERT INTO usage_aggregations
         (organization_id, event_type, period, period_start, period_end, total_quantity, event_count, unique_users)
     SELECT organization_id, event_type, period, period_start, period_end,
            sum(quantity), count(*), count(DISTINCT user_id)
     FROM ev GROUP BY 1, 2, 3, 4, 5",
    &[types::TIMESTAMPTZ, types::TIMESTAMPTZ, types::INT8],
);

/// Recomputes from the raw events every daily and monthly bucket of the months that
/// [start_time, end_time) touches, replacing what was there: a repair after corrections made
/// outside saas_core, never needed in normal operation. Running it twice gives the same rows.
/// `period` ('daily' or 'monthly') is kept from 0.1.0; both periods are recomputed. Events
/// not folded yet stay live. Refused for months whose raw events retention has dropped.
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
        let row = state.first();
        let folded: i64 = row.get(1).or_fail(what).unwrap_or(0);
        let kept_since: Option<TimestampWithTimeZone> = row.get(3).or_fail(what);
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
        spi::run(
            client,
            &RECOMPUTE_WINDOW,
            &[lo.into(), hi.into(), folded.into()],
            what,
        ) as i64
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
        Spi::run(&format!(
            "INSERT INTO auth.users (id, email) VALUES ('{U}', 'm@example.com')"
        ))
        .unwrap();
        let org = Spi::get_one::<String>(&format!(
            "SELECT id::text FROM organizations WHERE owner_id = '{U}'"
        ))
        .unwrap()
        .unwrap();
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

    const THIS_MONTH: &str = "usage_bucket_start('monthly', now())";
    const LAST_MONTH: &str =
        "usage_bucket_start('monthly', usage_bucket_start('monthly', now()) - interval '1 day')";
    const FIRST_DAY: &str = "usage_bucket_start('daily', usage_bucket_start('monthly', now()))";

    #[pg_test]
    fn folding_puts_events_in_their_utc_buckets_once() {
        Spi::run("SET LOCAL TimeZone = 'America/New_York'").unwrap();
        let org = org_with_events();
        assert_eq!(rollup(&org, "monthly", THIS_MONTH, "api_call"), None);
        Spi::run("SELECT aggregate_usage()").unwrap();
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
        // Folding again adds nothing; a new event is folded once.
        Spi::run("SELECT aggregate_usage()").unwrap();
        assert_eq!(
            rollup(&org, "monthly", THIS_MONTH, "api_call").as_deref(),
            Some("9/2/1")
        );
        Spi::run(&format!(
            "INSERT INTO usage_events (organization_id, user_id, event_type, quantity) VALUES ('{org}', '{U}', 'api_call', 1)"
        ))
        .unwrap();
        Spi::run("SELECT aggregate_usage()").unwrap();
        Spi::run("SELECT aggregate_usage()").unwrap();
        assert_eq!(
            rollup(&org, "monthly", THIS_MONTH, "api_call").as_deref(),
            Some("10/3/1")
        );
    }

    #[pg_test]
    fn corrections_reach_folded_rollups_at_once_and_recounts_follow() {
        let org = org_with_events();
        Spi::run("SELECT aggregate_usage()").unwrap();
        Spi::run(&format!(
            "DELETE FROM usage_events WHERE organization_id = '{org}' AND quantity = 5"
        ))
        .unwrap();
        assert_eq!(
            rollup(&org, "monthly", THIS_MONTH, "api_call").as_deref(),
            Some("4/1/1")
        );
        Spi::run(&format!(
            "UPDATE usage_events SET quantity = 40, user_id = NULL WHERE organization_id = '{org}' AND quantity = 4"
        ))
        .unwrap();
        assert_eq!(
            rollup(&org, "monthly", THIS_MONTH, "api_call").as_deref(),
            Some("40/1/1")
        );
        // The distinct-user count is recounted by the next fold.
        Spi::run("SELECT aggregate_usage()").unwrap();
        assert_eq!(
            rollup(&org, "monthly", THIS_MONTH, "api_call").as_deref(),
            Some("40/1/0")
        );
    }

    #[pg_test]
    fn re_aggregating_a_window_replaces_instead_of_double_counting() {
        let org = org_with_events();
        Spi::run("SELECT aggregate_usage()").unwrap();
        Spi::run(&format!(
            "UPDATE usage_aggregations SET total_quantity = 999 WHERE organization_id = '{org}'"
        ))
        .unwrap();
        let first = Spi::get_one::<i64>(
            "SELECT aggregate_usage('daily', usage_bucket_start('monthly', now()), usage_bucket_start('monthly', now()) + interval '1 day')",
        )
        .unwrap();
        let second = Spi::get_one::<i64>(
            "SELECT aggregate_usage('daily', usage_bucket_start('monthly', now()), usage_bucket_start('monthly', now()) + interval '1 day')",
        )
        .unwrap();
        assert_eq!(first, second);
        assert_eq!(
            rollup(&org, "monthly", THIS_MONTH, "api_call").as_deref(),
            Some("9/2/1")
        );
        assert_eq!(
            rollup(&org, "daily", FIRST_DAY, "api_call").as_deref(),
            Some("9/2/1")
        );
        // Last month was outside the window and keeps its (corrupted) value.
        assert_eq!(
            rollup(&org, "monthly", LAST_MONTH, "api_call").as_deref(),
            Some("999/1/1")
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
        Spi::run("SELECT aggregate_usage()").unwrap();
        assert_eq!(
            rollup(&org, "monthly", THIS_MONTH, "api_call").as_deref(),
            Some("1000000000009/3/1")
        );
    }

    #[pg_test(error = "aggregate_usage: start_time must be before end_time")]
    fn empty_window() {
        Spi::run("SELECT aggregate_usage('daily', now(), now())").unwrap();
    }
}
