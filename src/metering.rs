//! Metering: usage events and their daily/monthly rollups (sql/metering.sql).
use pgrx::prelude::*;

use crate::auth_context;
use crate::errors;
use crate::spi::{types, Expect, Statement};

pgrx::extension_sql_file!(
    "../sql/metering.sql",
    name = "metering",
    requires = ["entitlements", aggregate_usage]
);

/// Excludes live rollups (which hold it shared) while a window is recomputed.
static LOCK_ROLLUPS: Statement =
    Statement::write("SELECT pg_advisory_xact_lock(usage_rollup_lock_key())", &[]);

/// The window widened to whole UTC buckets: a bucket is always recomputed in full.
static BUCKET_WINDOW: Statement = Statement::read(
    "SELECT date_trunc($1, $2 AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
            (date_trunc($1, $3 AT TIME ZONE 'UTC')
             + CASE WHEN date_trunc($1, $3 AT TIME ZONE 'UTC') < $3 AT TIME ZONE 'UTC'
                    THEN ('1 ' || $1)::interval ELSE interval '0' END) AT TIME ZONE 'UTC'",
    &[types::TEXT, types::TIMESTAMPTZ, types::TIMESTAMPTZ],
);

static DELETE_BUCKETS: Statement = Statement::write(
    "DELETE FROM usage_aggregations WHERE period = $1 AND period_start >= $2 AND period_start < $3",
    &[types::TEXT, types::TIMESTAMPTZ, types::TIMESTAMPTZ],
);

static INSERT_BUCKETS: Statement = Statement::write(
    "INSERT INTO usage_aggregations
         (organization_id, event_type, period, period_start, period_end,
          total_quantity, event_count, unique_users)
     SELECT e.organization_id, e.event_type, $1,
            b.utc_start AT TIME ZONE 'UTC',
            (b.utc_start + ('1 ' || $2)::interval) AT TIME ZONE 'UTC',
            sum(e.quantity), count(*), count(DISTINCT e.user_id)
     FROM usage_events e
     CROSS JOIN LATERAL (SELECT date_trunc($2, e.created_at AT TIME ZONE 'UTC') AS utc_start) b
     WHERE e.created_at >= $3 AND e.created_at < $4
     GROUP BY e.organization_id, e.event_type, b.utc_start",
    &[
        types::TEXT,
        types::TEXT,
        types::TIMESTAMPTZ,
        types::TIMESTAMPTZ,
    ],
);

/// Recomputes the `period` ('daily' or 'monthly') rollups of every bucket that
/// [start_time, end_time) touches, from the raw events, replacing what was there: running it
/// twice gives the same rows, never double counts. Returns how many rollup rows it wrote.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn aggregate_usage(
    period: Option<&str>,
    start_time: Option<TimestampWithTimeZone>,
    end_time: Option<TimestampWithTimeZone>,
) -> i64 {
    let period = errors::required(period, "period");
    let start_time = errors::required(start_time, "start_time");
    let end_time = errors::required(end_time, "end_time");
    let unit = match period {
        "daily" => "day",
        "monthly" => "month",
        other => errors::invalid_parameter(format!(
            "aggregate_usage: period must be 'daily' or 'monthly', not \"{other}\""
        )),
    };
    if start_time >= end_time {
        errors::invalid_parameter("aggregate_usage: start_time must be before end_time");
    }
    if !start_time.is_finite() || !end_time.is_finite() {
        errors::invalid_parameter("aggregate_usage: the window must be finite");
    }
    if !auth_context::caller_is_service_role() {
        errors::insufficient_privilege(
            "aggregate_usage: only the service role may aggregate usage",
        );
    }
    Spi::connect_mut(|client| {
        client
            .update(LOCK_ROLLUPS.prepared(client), None, &[])
            .or_fail("aggregate_usage");
        let window = client
            .select(
                BUCKET_WINDOW.prepared(client),
                Some(1),
                &[unit.into(), start_time.into(), end_time.into()],
            )
            .or_fail("aggregate_usage");
        let row = window.first();
        let lo: TimestampWithTimeZone = row
            .get(1)
            .or_fail("aggregate_usage")
            .expect("finite window");
        let hi: TimestampWithTimeZone = row
            .get(2)
            .or_fail("aggregate_usage")
            .expect("finite window");
        client
            .update(
                DELETE_BUCKETS.prepared(client),
                None,
                &[period.into(), lo.into(), hi.into()],
            )
            .or_fail("aggregate_usage");
        client
            .update(
                INSERT_BUCKETS.prepared(client),
                None,
                &[period.into(), unit.into(), lo.into(), hi.into()],
            )
            .or_fail("aggregate_usage")
            .len() as i64
    })
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

    #[pg_test(error = "aggregate_usage: start_time must be before end_time")]
    fn empty_window() {
        Spi::run("SELECT aggregate_usage('daily', now(), now())").unwrap();
    }
}
