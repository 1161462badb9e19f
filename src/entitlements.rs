//! Entitlements: plan limits and feature flags, answered per request, and the seat limit
//! (sql/entitlements.sql).
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{JsonB, Uuid};
use serde_json::{json, Map, Value};

use crate::auth_context;
use crate::errors;
#[allow(unused_imports)] // named in `requires` above
use crate::plan_catalog::invalidate_plan_catalog;
use crate::plan_catalog::{self, Feature, Limit, Measure, PlanCatalog, Window};
use crate::spi::{Expect, Statement};

pgrx::extension_sql_file!(
    "../sql/entitlements.sql",
    name = "entitlements",
    requires = ["billing", feature_access, invalidate_plan_catalog]
);

/// What changes per request, in one round trip: the caller, the membership, the subscription
/// and the usage. Usage comes from the monthly rollup rows (one per month at most), never
/// from the raw event log. Plan limits and flags come from the per-backend `plan_catalog`.
/// One statement per kind of meter, so each keeps a small generic plan.
macro_rules! request_state {
    ($usage:literal) => {
        $crate::spi::Statement::read(
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
            &[
                $crate::spi::types::UUID,
                $crate::spi::types::UUID,
                $crate::spi::types::TEXT,
            ],
        )
    };
}
pub(crate) use request_state;

/// The statements that read a request's state, one per kind of meter.
pub struct UsageStatements {
    pub without_usage: Statement,
    pub members: Statement,
    pub sum_this_month: Statement,
    pub sum_lifetime: Statement,
    pub unique_users_this_month: Statement,
}

static STATEMENTS: UsageStatements = UsageStatements {
    without_usage: request_state!("SELECT NULL::float8 WHERE $3 IS NULL"),
    members: request_state!(
        "SELECT o.member_count FROM organizations o WHERE o.id = $2 AND $3 IS NULL"
    ),
    sum_this_month: request_state!(
        "SELECT coalesce(sum(a.total_quantity), 0) FROM usage_aggregations a
         WHERE a.organization_id = $2 AND a.event_type = $3 AND a.period = 'monthly'
           AND a.period_start = usage_bucket_start('monthly', now())"
    ),
    sum_lifetime: request_state!(
        "SELECT coalesce(sum(a.total_quantity), 0) FROM usage_aggregations a
         WHERE a.organization_id = $2 AND a.event_type = $3 AND a.period = 'monthly'"
    ),
    unique_users_this_month: request_state!(
        "SELECT coalesce(sum(a.unique_users), 0) FROM usage_aggregations a
         WHERE a.organization_id = $2 AND a.event_type = $3 AND a.period = 'monthly'
           AND a.period_start = usage_bucket_start('monthly', now())"
    ),
};

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

/// What `user_id` may do in `org_id` regarding `feature_key`:
/// `{"limit": 100, "usage": 12, "remaining": 88, "allowed": true, "plan": "free", ...}`
/// for limits (`-1` = unlimited), `{"enabled": true, "allowed": true, ...}` for boolean flags.
///
/// The service role may ask about anyone; any other caller only about themself. A user who
/// is not a member of the organization learns nothing about it (42501). Unknown keys: 22023.
#[pg_extern(stable, security_definer, name = "check_feature_access")]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn feature_access(user_id: Option<Uuid>, feature_key: Option<&str>, org_id: Option<Uuid>) -> JsonB {
    answer(user_id, feature_key, org_id, &STATEMENTS)
}

/// `check_feature_access` with the statements of a given schema version.
pub fn answer(
    user_id: Option<Uuid>,
    feature_key: Option<&str>,
    org_id: Option<Uuid>,
    statements: &'static UsageStatements,
) -> JsonB {
    let user_id = errors::required(user_id, "user_id");
    let feature_key = errors::required(feature_key, "feature_key");
    let org_id = errors::required(org_id, "org_id");
    // The answer is composed inside the SPI connection so the feature can borrow the catalog.
    Spi::connect_mut(|client| {
        let catalog = plan_catalog::get(client);
        let feature = catalog.feature(feature_key);
        let event_type = match feature {
            Some(Feature::Limit(m)) => m.event_type.as_deref(),
            _ => None,
        };
        let table = client
            .select(
                statements.for_feature(feature.as_ref()).prepared(client),
                Some(1),
                &[user_id.into(), org_id.into(), event_type.into()],
            )
            .or_fail("checking feature access");
        let row = table.first();
        let state = RequestState {
            caller: column(&row, 1),
            member_role: column(&row, 2),
            plan: column(&row, 3).unwrap_or_else(|| "free".into()),
            status: column(&row, 4),
            usage: column(&row, 5),
        };

        auth_context::check_self_or_service(state.caller, user_id, "check_feature_access");
        let Some(feature) = feature else {
            errors::invalid_parameter(format!(
                "check_feature_access: unknown feature key \"{feature_key}\""
            ))
        };
        if state.member_role.is_none() {
            errors::insufficient_privilege(
                "check_feature_access: the user is not a member of this organization",
            );
        }
        JsonB(Value::Object(describe(
            feature_key,
            &feature,
            &catalog,
            state,
        )))
    })
}

struct RequestState {
    caller: Option<Uuid>,
    member_role: Option<String>,
    plan: String,
    status: Option<String>,
    usage: Option<f64>,
}

fn column<T: pgrx::FromDatum + pgrx::IntoDatum>(
    row: &pgrx::spi::SpiTupleTable<'_>,
    i: usize,
) -> Option<T> {
    row.get(i).or_fail("checking feature access")
}

fn describe(
    feature_key: &str,
    feature: &Feature,
    catalog: &PlanCatalog,
    s: RequestState,
) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("feature_key".into(), json!(feature_key));
    out.insert("plan".into(), json!(s.plan));
    out.insert("subscription_status".into(), json!(s.status));
    out.insert("role".into(), json!(s.member_role));
    let plan_flags = catalog.flags(&s.plan);
    match feature {
        Feature::Limit(meter) => {
            let limit = catalog.limit(&s.plan, feature_key);
            let usage = s.usage.unwrap_or(0.0);
            let remaining = match limit {
                Limit::Unlimited => Value::Null,
                Limit::Capped(n) => number((n as f64 - usage).max(0.0)),
                Limit::NotGranted => json!(0),
            };
            out.insert("type".into(), json!("limit"));
            out.insert("limit".into(), json!(limit.value()));
            out.insert("unlimited".into(), json!(limit == Limit::Unlimited));
            out.insert("usage".into(), number(usage));
            out.insert("remaining".into(), remaining);
            out.insert("allowed".into(), json!(limit.allows(usage)));
            out.insert("window".into(), json!(meter.window.as_str()));
        }
        Feature::AllFlags => {
            out.insert("type".into(), json!("flags"));
            out.insert("limit".into(), Value::Null);
            out.insert(
                "features".into(),
                json!(plan_flags.cloned().unwrap_or_default()),
            );
            out.insert("allowed".into(), json!(true));
        }
        Feature::Flag => {
            let enabled = plan_flags
                .and_then(|f| f.get(feature_key).copied())
                .unwrap_or(false);
            out.insert("type".into(), json!("flag"));
            out.insert("limit".into(), Value::Null);
            out.insert("enabled".into(), json!(enabled));
            out.insert("allowed".into(), json!(enabled));
        }
    }
    out
}

/// Whole numbers print as integers (12, not 12.0).
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

/// The seat limit: an organization may not have more members than its plan's `max_seats`
/// (the same `Limit` reading as `check_feature_access`). `members` counts the new member.
pub fn enforce_seat_limit(client: &mut SpiClient<'_>, members: i64, plan: &str) {
    let limit = plan_catalog::get(client).limit(plan, "max_seats");
    if limit.allows((members - 1) as f64) {
        return;
    }
    let message = match limit {
        Limit::Capped(n) => format!("the organization has used all {n} seats of its {plan} plan"),
        _ => format!("the {plan} plan grants no seats (it has no max_seats row in plan_features)"),
    };
    errors::raise_with_hint(
        pgrx::PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        message,
        "Upgrade the plan or remove a member first.",
    )
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;
    use serde_json::Value;

    const ADA: &str = "00000000-0000-0000-0000-0000000000e1";
    const EVE: &str = "00000000-0000-0000-0000-0000000000e2";

    fn setup() -> String {
        Spi::run(&format!("INSERT INTO auth.users (id, email) VALUES ('{ADA}', 'ada@e.example'), ('{EVE}', 'eve@e.example')")).unwrap();
        Spi::get_one::<String>(&format!(
            "SELECT id::text FROM organizations WHERE owner_id = '{ADA}'"
        ))
        .unwrap()
        .unwrap()
    }

    fn access(user: &str, key: &str, org: &str) -> Value {
        Spi::get_one::<pgrx::JsonB>(&format!(
            "SELECT check_feature_access('{user}', '{key}', '{org}')"
        ))
        .unwrap()
        .unwrap()
        .0
    }

    #[pg_test]
    fn free_plan_record_limit_and_usage() {
        let org = setup();
        let a = access(ADA, "max_records", &org);
        assert_eq!(a["limit"], 100);
        assert_eq!(a["usage"], 0);
        assert_eq!(a["allowed"], true);
        Spi::run(&format!("INSERT INTO usage_events (organization_id, user_id, event_type, quantity) VALUES ('{org}', '{ADA}', 'record_created', 98), ('{org}', '{ADA}', 'record_created', 2)")).unwrap();
        let a = access(ADA, "max_records", &org);
        assert_eq!(a["usage"], 100);
        assert_eq!(a["remaining"], 0);
        assert_eq!(a["allowed"], false);
    }

    #[pg_test]
    fn upgrading_the_plan_changes_the_answer() {
        let org = setup();
        Spi::run(&format!(
            "UPDATE org_subscriptions SET plan = 'enterprise' WHERE organization_id = '{org}'"
        ))
        .unwrap();
        let a = access(ADA, "max_api_calls_per_month", &org);
        assert_eq!(a["limit"], -1);
        assert_eq!(a["unlimited"], true);
        assert_eq!(a["allowed"], true);
        assert_eq!(access(ADA, "sso", &org)["enabled"], true);
        // A canceled subscription falls back to the free plan.
        Spi::run(&format!(
            "UPDATE org_subscriptions SET status = 'canceled' WHERE organization_id = '{org}'"
        ))
        .unwrap();
        assert_eq!(access(ADA, "sso", &org)["enabled"], false);
        assert_eq!(access(ADA, "max_api_calls_per_month", &org)["limit"], 1000);
    }

    #[pg_test]
    fn flags_answer_for_the_plan() {
        let org = setup();
        let a = access(ADA, "api_access", &org);
        assert_eq!(a["type"], "flag");
        assert_eq!(a["enabled"], false);
        let all = access(ADA, "features", &org);
        assert_eq!(all["features"]["basic_features"], true);
    }

    #[pg_test(error = "check_feature_access: unknown feature key \"max_unicorns\"")]
    fn unknown_key_is_invalid_parameter() {
        let org = setup();
        access(ADA, "max_unicorns", &org);
    }

    #[pg_test(error = "check_feature_access: the user is not a member of this organization")]
    fn non_member_learns_nothing() {
        let org = setup();
        access(EVE, "max_records", &org);
    }

    #[pg_test(error = "check_feature_access: a user may only act for themself")]
    fn authenticated_user_cannot_ask_about_others() {
        let org = setup();
        Spi::run("SET LOCAL ROLE authenticated").unwrap();
        Spi::run(&format!(
            "SELECT set_config('request.jwt.claims', '{{\"sub\":\"{EVE}\"}}', true)"
        ))
        .unwrap();
        access(ADA, "max_records", &org);
    }

    #[pg_test]
    fn seats_and_the_seat_answer_follow_one_rule() {
        let org = setup();
        // A plan without a max_seats row grants no seats: check_feature_access says so, and
        // the membership trigger refuses a member for the same reason.
        Spi::run("DELETE FROM plan_features WHERE plan = 'free' AND feature_key = 'max_seats'")
            .unwrap();
        let a = access(ADA, "max_seats", &org);
        assert_eq!(a["allowed"], false);
        assert_eq!(a["limit"], serde_json::Value::Null);
        let refused = Spi::get_one::<bool>(&format!(
            "DO $$ BEGIN
               INSERT INTO organization_members (organization_id, user_id) VALUES ('{org}', '{EVE}');
               RAISE EXCEPTION 'accepted';
             EXCEPTION WHEN program_limit_exceeded THEN NULL;
             END $$;
             SELECT true"
        ));
        assert_eq!(refused, Ok(Some(true)));
        // Unlimited (-1) grants any number, in both.
        Spi::run("INSERT INTO plan_features (plan, feature_key, limit_value) VALUES ('free', 'max_seats', -1)").unwrap();
        assert_eq!(access(ADA, "max_seats", &org)["allowed"], true);
        Spi::run(&format!(
            "INSERT INTO organization_members (organization_id, user_id) VALUES ('{org}', '{EVE}')"
        ))
        .unwrap();
        assert_eq!(access(ADA, "max_seats", &org)["usage"], 2);
    }

    #[pg_test]
    fn flags_that_are_not_json_booleans_are_off_and_harmless() {
        let org = setup();
        Spi::run(r#"UPDATE plan_features SET flags = flags || '{"sso": "yes", "score": 1e400, "deep": [[[[[[1]]]]]]}'
                    WHERE plan = 'free' AND feature_key = 'features'"#).unwrap();
        assert_eq!(access(ADA, "sso", &org)["enabled"], false);
        assert_eq!(access(ADA, "score", &org)["allowed"], false);
        assert_eq!(access(ADA, "basic_features", &org)["enabled"], true);
    }

    #[pg_test]
    fn authenticated_user_asks_about_themself() {
        let org = setup();
        Spi::run("SET LOCAL ROLE authenticated").unwrap();
        Spi::run(&format!(
            "SELECT set_config('request.jwt.claims', '{{\"sub\":\"{ADA}\"}}', true)"
        ))
        .unwrap();
        assert_eq!(access(ADA, "max_seats", &org)["usage"], 1);
    }
}
