//! Usage records (sql/usage_records.sql): the usage a `usage_based` subscription reports to
//! its provider, one row per organization, event type and UTC month, produced from the
//! rollups by `prepare_usage_records` (the application's billing job calls it once a month has
//! closed, then reports each pending record and marks it with `mark_usage_record_reported`).
use pgrx::prelude::*;
use pgrx::Uuid;

use crate::auth_context;
use crate::errors;
use crate::jsonb::RawJsonb;
use crate::spi::{self, types, Statement};

pgrx::extension_sql_file!(
    "../sql/usage_records.sql",
    name = "usage_records",
    requires = [
        "billing",
        "metering",
        "roles",
        prepare_usage_records,
        mark_usage_record_reported
    ]
);

// The month's usage is what check_feature_access counted against it: the monthly rollup row
// plus the counter rows not folded yet (meters.rs reads the same two for one organization).
// Organizations on a paid usage_based subscription get a record per event type with usage; a
// record already reported is left as it was. (The answer is built from RETURNING: the outer
// query's snapshot does not see the CTE's writes.)
static PREPARE: Statement = Statement::write(
    "WITH month AS (
         SELECT usage_bucket_start('monthly', $1) AS s, usage_bucket_end('monthly', $1) AS e
     ), usage AS (
         SELECT u.organization_id, u.event_type, sum(u.quantity) AS quantity
         FROM (SELECT a.organization_id, a.event_type, a.total_quantity AS quantity
               FROM usage_aggregations a, month m WHERE a.period = 'monthly' AND a.period_start = m.s
               UNION ALL
               SELECT c.organization_id, c.event_type, c.total_quantity
               FROM usage_counters c, month m WHERE c.period = 'monthly' AND c.period_start = m.s) u
         GROUP BY u.organization_id, u.event_type
     ), prepared AS (
         INSERT INTO usage_records AS r (organization_id, event_type, period_start, period_end, quantity, provider,
                                         provider_subscription_id)
         SELECT u.organization_id, u.event_type, m.s, m.e, greatest(u.quantity, 0), s.provider, s.provider_subscription_id
         FROM usage u
         JOIN org_subscriptions s ON s.organization_id = u.organization_id
         CROSS JOIN month m
         WHERE s.billing_type = 'usage_based' AND plan_in_effect(s.plan, s.status) <> 'free'
         ON CONFLICT (organization_id, event_type, period_start) DO UPDATE SET
             quantity = excluded.quantity, provider = excluded.provider,
             provider_subscription_id = excluded.provider_subscription_id
         WHERE r.status = 'pending'
         RETURNING r.id, r.organization_id, r.event_type, r.quantity, r.provider, r.provider_subscription_id
     )
     SELECT jsonb_build_object(
         'period_start', m.s, 'period_end', m.e, 'prepared', (SELECT count(*) FROM prepared),
         'records', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                  'id', r.id, 'organization_id', r.organization_id, 'event_type', r.event_type,
                                  'quantity', r.quantity, 'provider', r.provider,
                                  'provider_subscription_id', r.provider_subscription_id)
                                  ORDER BY r.organization_id, r.event_type)
                              FROM prepared r), '[]'))
     FROM month m",
    &[types::TIMESTAMPTZ],
);

static MONTH_HAS_ENDED: Statement = Statement::read(
    "SELECT usage_bucket_end('monthly', $1) <= now()",
    &[types::TIMESTAMPTZ],
);

/// Prepares the usage records of the UTC month containing `month` (by default the previous
/// month) for every organization on a paid `usage_based` subscription, from the rollups, and
/// returns those waiting to be reported. Idempotent: preparing a month again refreshes its
/// pending records (a late event counted since) and leaves reported ones alone. Service role.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn prepare_usage_records(
    month: default!(Option<pgrx::datum::TimestampWithTimeZone>, "NULL"),
) -> RawJsonb {
    if !auth_context::caller_is_service_role() {
        errors::insufficient_privilege(
            "prepare_usage_records: only the service role prepares usage records",
        );
    }
    Spi::connect_mut(|client| {
        let month = match month {
            Some(month) => month,
            None => spi::one::<pgrx::datum::TimestampWithTimeZone>(
                client,
                &PREVIOUS_MONTH,
                &[],
                "reading the clock",
            )
            .unwrap_or_else(|| errors::internal("reading the clock", "no time")),
        };
        let ended = spi::one::<bool>(
            client,
            &MONTH_HAS_ENDED,
            &[month.into()],
            "reading the month",
        );
        if ended != Some(true) {
            errors::invalid_parameter(
                "prepare_usage_records: the month has not ended yet (its usage may still grow)",
            );
        }
        errors::required(
            spi::one_mut::<RawJsonb>(client, &PREPARE, &[month.into()], "preparing usage records"),
            "usage records",
        )
    })
}

static PREVIOUS_MONTH: Statement = Statement::read(
    "SELECT usage_bucket_start('monthly', now()) - interval '1 day'",
    &[],
);

static MARK_REPORTED: Statement = Statement::write(
    "UPDATE usage_records SET status = 'reported', reported_at = now(), provider_record_id = $2
     WHERE id = $1 AND status = 'pending'
     RETURNING id",
    &[types::UUID, types::TEXT],
);

static REPORTED_AS: Statement = Statement::read(
    "SELECT coalesce(provider_record_id, '') FROM usage_records WHERE id = $1",
    &[types::UUID],
);

/// Marks a usage record as reported to the provider (`provider_record_id`: the provider's id
/// of what was sent, if any). Marking it again with the same id is a no-op; a different one is
/// refused (55000). Service role.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn mark_usage_record_reported(
    record_id: Option<Uuid>,
    provider_record_id: default!(Option<&str>, "NULL"),
) {
    if !auth_context::caller_is_service_role() {
        errors::insufficient_privilege(
            "mark_usage_record_reported: only the service role reports usage",
        );
    }
    let record = errors::required(record_id, "record_id");
    Spi::connect_mut(|client| {
        if spi::one_mut::<Uuid>(
            client,
            &MARK_REPORTED,
            &[record.into(), provider_record_id.into()],
            "marking the usage record",
        )
        .is_some()
        {
            return;
        }
        match spi::one::<String>(
            client,
            &REPORTED_AS,
            &[record.into()],
            "reading the usage record",
        ) {
            None => errors::invalid_parameter(format!(
                "mark_usage_record_reported: no usage record {record}"
            )),
            Some(earlier) if earlier == provider_record_id.unwrap_or("") => {}
            Some(earlier) => errors::not_in_prerequisite_state(
                format!("mark_usage_record_reported: usage record {record} was reported already"),
                &format!("It was reported as \"{earlier}\"."),
            ),
        }
    })
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn only_the_service_role_reports_and_an_unknown_record_is_22023() {
        Spi::run("SET LOCAL ROLE authenticated").unwrap();
        let member = crate::testing::error_of(
            "SELECT mark_usage_record_reported('00000000-0000-0000-0000-0000000000e1')",
        )
        .unwrap_or_default();
        assert!(member.starts_with("42501"), "{member}");
        Spi::run("RESET ROLE").unwrap();
        let unknown = crate::testing::error_of(
            "SELECT mark_usage_record_reported('00000000-0000-0000-0000-0000000000e1')",
        )
        .unwrap_or_default();
        assert!(
            unknown.starts_with("22023: mark_usage_record_reported: no usage record"),
            "{unknown}"
        );
    }
}
