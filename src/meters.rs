//! What a meter has counted so far: the rollup rows `aggregate_usage()` folded plus the
//! counter rows not folded yet (a few per bucket: one per writing backend). Exact at once,
//! and flat in the size of the log. The one place these reads are written: `check_feature_access`,
//! `record_usage` and `get_usage_summary` all use them. In each fragment `$2` is the
//! organization and `$3` the event type; a fragment is a scalar subquery.
use pgrx::spi::SpiClient;
use pgrx::Uuid;

use crate::plan_catalog::{Measure, Meter, Window};
use crate::spi::{self, Statement};

/// Sum of quantities this UTC month.
macro_rules! usage_sum_this_month {
    () => {
        "(coalesce((SELECT a.total_quantity FROM usage_aggregations a
                    WHERE a.organization_id = $2 AND a.event_type = $3 AND a.period = 'monthly'
                      AND a.period_start = usage_bucket_start('monthly', now())), 0)
          + coalesce((SELECT sum(c.total_quantity) FROM usage_counters c
                      WHERE c.organization_id = $2 AND c.event_type = $3 AND c.period = 'monthly'
                        AND c.period_start = usage_bucket_start('monthly', now())), 0))"
    };
}

/// Sum of quantities, all time.
macro_rules! usage_sum_lifetime {
    () => {
        "(coalesce((SELECT sum(a.total_quantity) FROM usage_aggregations a
                    WHERE a.organization_id = $2 AND a.event_type = $3 AND a.period = 'monthly'), 0)
          + coalesce((SELECT sum(c.total_quantity) FROM usage_counters c
                      WHERE c.organization_id = $2 AND c.event_type = $3 AND c.period = 'monthly'), 0))"
    };
}

/// Distinct users with an event this UTC month.
macro_rules! usage_unique_users_this_month {
    () => {
        "(coalesce((SELECT a.unique_users FROM usage_aggregations a
                    WHERE a.organization_id = $2 AND a.event_type = $3 AND a.period = 'monthly'
                      AND a.period_start = usage_bucket_start('monthly', now())), 0)
          + coalesce((SELECT sum(c.unique_users) FROM usage_counters c
                      WHERE c.organization_id = $2 AND c.event_type = $3 AND c.period = 'monthly'
                        AND c.period_start = usage_bucket_start('monthly', now())), 0))"
    };
}

/// Members of the organization.
macro_rules! usage_members {
    () => {
        "(SELECT o.member_count FROM organizations o WHERE o.id = $2 AND $3::text IS NULL)"
    };
}

pub(crate) use {
    usage_members, usage_sum_lifetime, usage_sum_this_month, usage_unique_users_this_month,
};

/// One statement per meter kind, each a small generic plan; `$1` is unused here.
macro_rules! usage_statement {
    ($fragment:expr) => {
        Statement::read(
            concat!(
                "SELECT (",
                $fragment,
                ")::float8 WHERE $1::uuid IS NULL OR true"
            ),
            &[
                crate::spi::types::UUID,
                crate::spi::types::UUID,
                crate::spi::types::TEXT,
            ],
        )
    };
}

static SUM_THIS_MONTH: Statement = usage_statement!(usage_sum_this_month!());
static SUM_LIFETIME: Statement = usage_statement!(usage_sum_lifetime!());
static UNIQUE_USERS_THIS_MONTH: Statement = usage_statement!(usage_unique_users_this_month!());
static MEMBERS: Statement = usage_statement!(usage_members!());

/// The statement that reads `meter`'s usage, or none for a limit without a meter.
pub fn statement_for(meter: &Meter) -> Option<&'static Statement> {
    match (meter.measure, meter.window) {
        (Measure::Members, _) => Some(&MEMBERS),
        (Measure::Sum, Window::Lifetime) => Some(&SUM_LIFETIME),
        (Measure::Sum, _) => Some(&SUM_THIS_MONTH),
        (Measure::UniqueUsers, _) => Some(&UNIQUE_USERS_THIS_MONTH),
        (Measure::Unmetered, _) => None,
    }
}

/// `meter`'s usage in `org` now, as this statement's snapshot sees it.
pub fn usage(client: &SpiClient<'_>, org: Uuid, meter: &Meter) -> f64 {
    let Some(statement) = statement_for(meter) else {
        return 0.0;
    };
    spi::one::<f64>(
        client,
        statement,
        &[
            None::<Uuid>.into(),
            org.into(),
            meter.event_type.as_deref().into(),
        ],
        "reading usage",
    )
    .unwrap_or(0.0)
}
