//! The C entry points that the 0.1.0 install script binds (`sql/saas_core--0.1.0.sql`), for a
//! database whose SQL is still 0.1.0 while the library on disk is newer: between installing
//! the new package and `ALTER EXTENSION saas_core UPDATE`, signups, feature checks and
//! rollups keep working on the 0.1.0 tables.
//!
//! Entry points whose behaviour does not depend on the schema (`is_valid_username`,
//! `check_username_available`, `complete_onboarding`, `update_updated_at_column`,
//! `invalidate_plan_catalog`) are shared with the current version under their 0.1.0 names.
//! The ones below read or write 0.1.0's tables as 0.1.0 had them; the 0.2.0 script binds the
//! current implementations, which have other symbol names. None of these emit SQL.
use pgrx::prelude::*;
use pgrx::Uuid;

use crate::auth_context;
use crate::entitlements::{self, RequestState};
use crate::errors;
use crate::jsonb::RawJsonb;
use crate::metering::Period;
use crate::organizations::NewTeam;
use crate::plan_catalog::{self, Feature, Measure, Window};
use crate::provisioning::{self, ProfileSchema};
use crate::spi::{self, types, Expect, Statement};

/// 0.1.0's `on_auth_user_created` trigger function.
#[pg_trigger(sql = false)]
fn handle_new_user<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::datum::TryFromDatumError> {
    let Some(new) = trigger.new() else {
        errors::invalid_parameter("handle_new_user() must be a row-level INSERT trigger")
    };
    let id: Uuid = errors::required(new.get_by_name::<Uuid>("id")?, "auth.users.id");
    Spi::connect_mut(|client| provisioning::provision_account(client, id, ProfileSchema::V0_1));
    Ok(None)
}

/// 0.1.0's `sync_auth_users()`.
#[pg_extern(sql = false)]
fn sync_auth_users() -> i64 {
    if !auth_context::caller_is_service_role() {
        errors::insufficient_privilege(
            "sync_auth_users: only the service role may provision users",
        );
    }
    Spi::connect_mut(|client| provisioning::provision_missing(client, ProfileSchema::V0_1))
}

/// 0.1.0's `create_organization(name, org_type, slug)`: 0.1.0 has no anonymous accounts.
#[pg_extern(sql = false)]
fn create_organization(name: Option<&str>, org_type: Option<&str>, slug: Option<&str>) -> Uuid {
    let team = NewTeam::parse(name, org_type, slug);
    Spi::connect_mut(|client| {
        let Some(owner) = auth_context::current_uid(client) else {
            errors::insufficient_privilege("create_organization: not authenticated")
        };
        team.create(client, owner)
    })
}

/// 0.1.0's request state, in one round trip: the caller, the membership, the subscription
/// and the usage, one statement per kind of meter (0.1.0 counts members and computes month
/// buckets inline, and has no counter rows).
macro_rules! request_state {
    ($usage:expr) => {
        Statement::read(
            concat!(
                "SELECT auth.uid(),
                        (SELECT m.role FROM organization_members m
                         WHERE m.organization_id = $2 AND m.user_id = $1),
                        coalesce(plan_in_effect(s.plan, s.status), 'free'),
                        s.status,
                        (",
                $usage,
                ")::float8
                 FROM (SELECT) AS one
                 LEFT JOIN org_subscriptions s ON s.organization_id = $2"
            ),
            &[types::UUID, types::UUID, types::TEXT],
        )
    };
}

/// The statements that read a request's state, one per kind of meter.
struct UsageStatements {
    without_usage: Statement,
    members: Statement,
    sum_this_month: Statement,
    sum_lifetime: Statement,
    unique_users_this_month: Statement,
}

impl UsageStatements {
    /// The statement that measures `feature`'s usage.
    fn for_feature(&'static self, feature: Option<&Feature>) -> &'static Statement {
        let Some(Feature::Limit(meter)) = feature else {
            return &self.without_usage;
        };
        match (meter.measure, meter.window) {
            (Measure::Members, _) => &self.members,
            (Measure::Sum, Window::Lifetime) => &self.sum_lifetime,
            (Measure::Sum, _) => &self.sum_this_month,
            (Measure::UniqueUsers, _) => &self.unique_users_this_month,
            (Measure::Unmetered, _) => &self.without_usage,
        }
    }
}

/// 0.1.0 counts members and computes month buckets inline.
static STATEMENTS: UsageStatements = UsageStatements {
    without_usage: request_state!("SELECT NULL::float8 WHERE $3 IS NULL"),
    members: request_state!(
        "SELECT count(*) FROM organization_members x WHERE x.organization_id = $2 AND $3 IS NULL"
    ),
    sum_this_month: request_state!(
        "SELECT coalesce(sum(a.total_quantity), 0) FROM usage_aggregations a
         WHERE a.organization_id = $2 AND a.event_type = $3 AND a.period = 'monthly'
           AND a.period_start = date_trunc('month', now(), 'UTC')"
    ),
    sum_lifetime: request_state!(
        "SELECT coalesce(sum(a.total_quantity), 0) FROM usage_aggregations a
         WHERE a.organization_id = $2 AND a.event_type = $3 AND a.period = 'monthly'"
    ),
    unique_users_this_month: request_state!(
        "SELECT coalesce(sum(a.unique_users), 0) FROM usage_aggregations a
         WHERE a.organization_id = $2 AND a.event_type = $3 AND a.period = 'monthly'
           AND a.period_start = date_trunc('month', now(), 'UTC')"
    ),
};

/// 0.1.0's `check_feature_access(user_id, feature_key, org_id)`.
#[pg_extern(sql = false)]
fn check_feature_access(
    user_id: Option<Uuid>,
    feature_key: Option<&str>,
    org_id: Option<Uuid>,
) -> RawJsonb {
    let user_id = errors::required(user_id, "user_id");
    let feature_key = errors::required(feature_key, "feature_key");
    let org_id = errors::required(org_id, "org_id");
    // The answer is composed inside the SPI connection so the feature can borrow the catalog,
    // and becomes jsonb outside it, in the caller's memory (SPI's is freed on return).
    let answer = Spi::connect_mut(|client| {
        let catalog = plan_catalog::get(client);
        let feature = catalog.feature(feature_key);
        let event_type = match feature {
            Some(Feature::Limit(m)) => m.event_type.as_deref(),
            _ => None,
        };
        let what = "checking feature access";
        let table = client
            .select(
                STATEMENTS.for_feature(feature.as_ref()).prepared(client),
                Some(1),
                &[user_id.into(), org_id.into(), event_type.into()],
            )
            .or_fail(what);
        let row = table.first();
        let caller: Option<Uuid> = row.get(1).or_fail(what);
        let (feature, member_role) =
            entitlements::admit(&catalog, caller, user_id, feature_key, || {
                row.get(2).or_fail(what)
            });
        let state = RequestState {
            member_role,
            plan: row.get(3).or_fail(what).unwrap_or_else(|| "free".into()),
            status: row.get(4).or_fail(what),
            usage: row.get(5).or_fail(what),
        };
        serde_json::Value::Object(entitlements::describe(
            feature_key,
            &feature,
            &catalog,
            state,
        ))
    });
    crate::jsonb::build(&answer)
}

/// 0.1.0's live rollup trigger holds this advisory lock shared; the recompute takes it alone.
static LOCK_ROLLUPS: Statement =
    Statement::write("SELECT pg_advisory_xact_lock(usage_rollup_lock_key())", &[]);

static WINDOW: Statement = Statement::read(
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

/// 0.1.0's `aggregate_usage(period, start_time, end_time)`.
#[pg_extern(sql = false)]
fn aggregate_usage(
    period: Option<&str>,
    start_time: Option<TimestampWithTimeZone>,
    end_time: Option<TimestampWithTimeZone>,
) -> i64 {
    let period = Period::parse(errors::required(period, "period"), "aggregate_usage");
    let unit = match period {
        Period::Daily => "day",
        Period::Monthly => "month",
    };
    let start_time = errors::required(start_time, "start_time");
    let end_time = errors::required(end_time, "end_time");
    if start_time >= end_time || !start_time.is_finite() || !end_time.is_finite() {
        errors::invalid_parameter("aggregate_usage: start_time must be before end_time");
    }
    if !auth_context::caller_is_service_role() {
        errors::insufficient_privilege(
            "aggregate_usage: only the service role may aggregate usage",
        );
    }
    let what = "recomputing usage rollups";
    Spi::connect_mut(|client| {
        spi::run(client, &LOCK_ROLLUPS, &[], what);
        let window = client
            .select(
                WINDOW.prepared(client),
                Some(1),
                &[unit.into(), start_time.into(), end_time.into()],
            )
            .or_fail(what);
        let row = window.first();
        let (Some(lo), Some(hi)) = (
            row.get::<TimestampWithTimeZone>(1).or_fail(what),
            row.get::<TimestampWithTimeZone>(2).or_fail(what),
        ) else {
            errors::internal(what, "the bucket window is NULL")
        };
        spi::run(
            client,
            &DELETE_BUCKETS,
            &[period.as_str().into(), lo.into(), hi.into()],
            what,
        );
        spi::run(
            client,
            &INSERT_BUCKETS,
            &[period.as_str().into(), unit.into(), lo.into(), hi.into()],
            what,
        ) as i64
    })
}
