//! Metering: usage events and their daily/monthly rollups (sql/metering.sql).
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::auth_context;
use crate::errors;
use crate::spi::{self, types, Expect, Statement};

pgrx::extension_sql_file!(
    "../sql/metering.sql",
    name = "metering",
    requires = ["entitlements", recompute_usage_rollups]
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

/// Locks the organizations whose buckets the window touches, in id order, FOR UPDATE. Live
/// writers hold FOR KEY SHARE on their organization's row (the foreign key check of their
/// event) until they commit, so the recompute waits for in-flight events and new ones wait
/// for the recompute: none is lost or counted twice. The lock is per organization and only
/// members of an organization can take its row lock, so no tenant can stall another.
static LOCK_ORGS_IN_WINDOW: Statement = Statement::write(
    "SELECT o.id FROM organizations o
     WHERE o.id IN (SELECT e.organization_id FROM usage_events e
                    WHERE e.created_at >= $2 AND e.created_at < $3
                    UNION
                    SELECT a.organization_id FROM usage_aggregations a
                    WHERE a.period = $1 AND a.period_start >= $2 AND a.period_start < $3)
     ORDER BY o.id
     FOR UPDATE OF o",
    &[types::TEXT, types::TIMESTAMPTZ, types::TIMESTAMPTZ],
);

/// The window widened to whole buckets: a bucket is always recomputed in full.
static BUCKET_WINDOW: Statement = Statement::read(
    "SELECT usage_bucket_start($1, $2),
            CASE WHEN usage_bucket_start($1, $3) < $3 THEN usage_bucket_end($1, $3)
                 ELSE usage_bucket_start($1, $3) END",
    &[types::TEXT, types::TIMESTAMPTZ, types::TIMESTAMPTZ],
);

static DELETE_BUCKETS: Statement = Statement::write(
    "DELETE FROM usage_aggregations
     WHERE period = $1 AND period_start >= $2 AND period_start < $3
       AND organization_id = ANY ($4)",
    &[
        types::TEXT,
        types::TIMESTAMPTZ,
        types::TIMESTAMPTZ,
        types::UUID_ARRAY,
    ],
);

static INSERT_BUCKETS: Statement = Statement::write(
    "INSERT INTO usage_aggregations
         (organization_id, event_type, period, period_start, period_end,
          total_quantity, event_count, unique_users)
     SELECT e.organization_id, e.event_type, $1,
            usage_bucket_start($1, e.created_at), usage_bucket_end($1, e.created_at),
            sum(e.quantity), count(*), count(DISTINCT e.user_id)
     FROM usage_events e
     WHERE e.created_at >= $2 AND e.created_at < $3 AND e.organization_id = ANY ($4)
     GROUP BY e.organization_id, e.event_type, usage_bucket_start($1, e.created_at),
              usage_bucket_end($1, e.created_at)",
    &[
        types::TEXT,
        types::TIMESTAMPTZ,
        types::TIMESTAMPTZ,
        types::UUID_ARRAY,
    ],
);

/// Recomputes the `period` ('daily' or 'monthly') rollups of every bucket that
/// [start_time, end_time) touches, from the raw events, replacing what was there: running it
/// twice gives the same rows, never double counts. Returns how many rollup rows it wrote.
#[pg_extern(volatile, security_definer, name = "aggregate_usage")]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn recompute_usage_rollups(
    period: Option<&str>,
    start_time: Option<TimestampWithTimeZone>,
    end_time: Option<TimestampWithTimeZone>,
) -> i64 {
    let period = Period::parse(errors::required(period, "period"), "aggregate_usage");
    let start_time = errors::required(start_time, "start_time");
    let end_time = errors::required(end_time, "end_time");
    if !start_time.is_finite() || !end_time.is_finite() {
        errors::invalid_parameter("aggregate_usage: the window must be finite");
    }
    if start_time >= end_time {
        errors::invalid_parameter("aggregate_usage: start_time must be before end_time");
    }
    if !auth_context::caller_is_service_role() {
        errors::insufficient_privilege(
            "aggregate_usage: only the service role may aggregate usage",
        );
    }
    // A transaction snapshot taken before the organizations were locked would miss events
    // that committed while waiting for them.
    // SAFETY: reads the backend's current transaction isolation level.
    if unsafe { pg_sys::XactIsoLevel } >= pg_sys::XACT_REPEATABLE_READ as i32 {
        errors::raise(
            pgrx::PgSqlErrorCode::ERRCODE_INVALID_TRANSACTION_STATE,
            "aggregate_usage: run it in a READ COMMITTED transaction (under REPEATABLE READ or SERIALIZABLE its snapshot could miss events committed while it waits)",
        );
    }
    Spi::connect_mut(|client| recompute(client, period, start_time, end_time))
}

fn recompute(
    client: &mut SpiClient<'_>,
    period: Period,
    start_time: TimestampWithTimeZone,
    end_time: TimestampWithTimeZone,
) -> i64 {
    let what = "recomputing usage rollups";
    let window = client
        .select(
            BUCKET_WINDOW.prepared(client),
            Some(1),
            &[period.as_str().into(), start_time.into(), end_time.into()],
        )
        .or_fail(what);
    let row = window.first();
    let (Some(lo), Some(hi)) = (
        row.get::<TimestampWithTimeZone>(1).or_fail(what),
        row.get::<TimestampWithTimeZone>(2).or_fail(what),
    ) else {
        errors::internal(what, "the bucket window is NULL")
    };
    let orgs: Vec<pgrx::Uuid> = client
        .update(
            LOCK_ORGS_IN_WINDOW.prepared(client),
            None,
            &[period.as_str().into(), lo.into(), hi.into()],
        )
        .or_fail(what)
        .filter_map(|r| r.get::<pgrx::Uuid>(1).or_fail(what))
        .collect();
    let args = || {
        [
            period.as_str().into(),
            lo.into(),
            hi.into(),
            orgs.clone().into(),
        ]
    };
    spi::run(client, &DELETE_BUCKETS, &args(), what);
    spi::run(client, &INSERT_BUCKETS, &args(), what) as i64
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    const U: &str = "00000000-0000-0000-0000-0000000000f1";

    fn org_with_events() -> String {
        Spi::run(&format!(
            "INSERT INTO auth.users (id, email) VALUES ('{U}', 'm@example.com')"
        ))
        .unwrap();
        let org = Spi::get_one::<String>(&format!(
            "SELECT id::text FROM organizations WHERE owner_id = '{U}'"
        ))
        .unwrap()
        .unwrap();
        Spi::run(&format!(
            "INSERT INTO usage_events (organization_id, user_id, event_type, quantity, created_at) VALUES
               ('{org}', '{U}', 'api_call', 3, '2026-01-31 23:30+00'),
               ('{org}', '{U}', 'api_call', 4, '2026-02-01 00:30+00'),
               ('{org}', '{U}', 'api_call', 5, '2026-02-15 12:00+00'),
               ('{org}', NULL,  'record_created', 1, '2026-02-15 12:00+00')"
        ))
        .unwrap();
        org
    }

    fn rollup(org: &str, period: &str, start: &str, event: &str) -> Option<String> {
        Spi::get_one::<String>(&format!(
            "SELECT total_quantity::text || '/' || event_count || '/' || unique_users FROM usage_aggregations
             WHERE organization_id = '{org}' AND period = '{period}' AND event_type = '{event}' AND period_start = '{start}'"
        ))
        .unwrap()
    }

    #[pg_test]
    fn live_rollups_follow_inserts_in_utc_buckets() {
        Spi::run("SET LOCAL TimeZone = 'America/New_York'").unwrap();
        let org = org_with_events();
        assert_eq!(
            rollup(&org, "monthly", "2026-01-01 00:00+00", "api_call").as_deref(),
            Some("3/1/1")
        );
        assert_eq!(
            rollup(&org, "monthly", "2026-02-01 00:00+00", "api_call").as_deref(),
            Some("9/2/1")
        );
        assert_eq!(
            rollup(&org, "daily", "2026-02-15 00:00+00", "record_created").as_deref(),
            Some("1/1/0")
        );
        assert_eq!(
            Spi::get_one::<bool>(&format!("SELECT period_end = '2026-03-01 00:00+00' FROM usage_aggregations WHERE organization_id = '{org}' AND period = 'monthly' AND period_start = '2026-02-01 00:00+00' AND event_type = 'api_call'")).unwrap(),
            Some(true)
        );
    }

    #[pg_test]
    fn re_aggregating_replaces_instead_of_double_counting() {
        let org = org_with_events();
        // Corrupt a rollup, then recompute February twice.
        Spi::run(&format!("UPDATE usage_aggregations SET total_quantity = 999 WHERE organization_id = '{org}' AND period = 'monthly'")).unwrap();
        let first =
            Spi::get_one::<i64>("SELECT aggregate_usage('monthly', '2026-02-10', '2026-02-11')")
                .unwrap();
        let second =
            Spi::get_one::<i64>("SELECT aggregate_usage('monthly', '2026-02-10', '2026-02-11')")
                .unwrap();
        assert_eq!(first, Some(2)); // api_call and record_created buckets of February
        assert_eq!(second, first);
        assert_eq!(
            rollup(&org, "monthly", "2026-02-01 00:00+00", "api_call").as_deref(),
            Some("9/2/1")
        );
        // January was outside the window and keeps its (corrupted) value.
        assert_eq!(
            rollup(&org, "monthly", "2026-01-01 00:00+00", "api_call").as_deref(),
            Some("999/1/1")
        );
        assert_eq!(
            Spi::get_one::<i64>("SELECT aggregate_usage('daily', '2026-01-31', '2026-02-02')")
                .unwrap(),
            Some(2)
        );
    }

    #[pg_test(error = "aggregate_usage: period must be 'daily' or 'monthly', not \"hourly\"")]
    fn bad_period() {
        Spi::run("SELECT aggregate_usage('hourly', now() - interval '1 day', now())").unwrap();
    }

    #[pg_test(
        error = "new row for relation \"usage_events\" violates check constraint \"usage_events_quantity_finite_check\""
    )]
    fn non_finite_quantities_are_refused() {
        let org = org_with_events();
        Spi::run(&format!("INSERT INTO usage_events (organization_id, event_type, quantity) VALUES ('{org}', 'api_call', 'NaN')")).unwrap();
    }

    #[pg_test]
    fn absurd_quantities_are_refused_and_leave_the_meters_alone() {
        let org = org_with_events();
        let before = rollup(&org, "monthly", "2026-02-01 00:00+00", "api_call");
        Spi::run(&format!(
            "DO $$
             DECLARE q text; refused int := 0;
             BEGIN
               FOREACH q IN ARRAY ARRAY['NaN', 'Infinity', '-Infinity', '1e13', '-1e13', '0'] LOOP
                 BEGIN
                   INSERT INTO usage_events (organization_id, event_type, quantity, created_at)
                   VALUES ('{org}', 'api_call', q::numeric, '2026-02-20 00:00+00');
                 EXCEPTION WHEN check_violation THEN refused := refused + 1;
                 END;
               END LOOP;
               IF refused <> 6 THEN RAISE EXCEPTION 'only % of 6 refused', refused; END IF;
             END $$"
        ))
        .unwrap();
        assert_eq!(
            rollup(&org, "monthly", "2026-02-01 00:00+00", "api_call"),
            before
        );
        // The largest accepted magnitude still counts.
        Spi::run(&format!(
            "INSERT INTO usage_events (organization_id, event_type, quantity, created_at)
             VALUES ('{org}', 'api_call', 1e12, '2026-02-20 00:00+00')"
        ))
        .unwrap();
        assert_eq!(
            rollup(&org, "monthly", "2026-02-01 00:00+00", "api_call").as_deref(),
            Some("1000000000009/3/1")
        );
    }

    #[pg_test(error = "aggregate_usage: start_time must be before end_time")]
    fn empty_window() {
        Spi::run("SELECT aggregate_usage('daily', now(), now())").unwrap();
    }
}
