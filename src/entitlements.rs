//! Entitlements: plan limits and feature flags, answered per request, and the seat limit
//! (sql/entitlements.sql).
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::Uuid;
use serde_json::{json, Map, Value};

use crate::auth_context;
use crate::errors;
use crate::jsonb::{self, RawJsonb};
use crate::meters;
use crate::organizations::Seats;
#[allow(unused_imports)] // named in `requires` above
use crate::plan_catalog::invalidate_plan_catalog;
use crate::plan_catalog::{self, Enforcement, Feature, Limit, Measure, Meter, PlanCatalog, Window};
use crate::spi::{Expect, Statement};

pgrx::extension_sql_file!(
    "../sql/entitlements.sql",
    name = "entitlements",
    requires = [
        "billing",
        feature_access,
        get_usage_summary,
        invalidate_plan_catalog
    ]
);

/// What changes per request, in one round trip: the caller, the membership, the subscription
/// and the usage. Usage comes from the monthly rollup rows (one per month at most), never
/// from the raw event log. Plan limits and flags come from the per-backend `plan_catalog`.
/// One statement per kind of meter, so each keeps a small generic plan.
macro_rules! request_state {
    ($usage:expr) => {
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
    members: request_state!(meters::usage_members!()),
    sum_this_month: request_state!(meters::usage_sum_this_month!()),
    sum_lifetime: request_state!(meters::usage_sum_lifetime!()),
    unique_users_this_month: request_state!(meters::usage_unique_users_this_month!()),
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
fn feature_access(
    user_id: Option<Uuid>,
    feature_key: Option<&str>,
    org_id: Option<Uuid>,
) -> RawJsonb {
    answer(user_id, feature_key, org_id, &STATEMENTS)
}

/// `check_feature_access` with the statements of a given schema version.
pub fn answer(
    user_id: Option<Uuid>,
    feature_key: Option<&str>,
    org_id: Option<Uuid>,
    statements: &'static UsageStatements,
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
        Value::Object(describe(feature_key, &feature, &catalog, state))
    });
    jsonb::build(&answer)
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

/// Who is asking, in the organization: their role there, or the service role.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    Owner,
    Admin,
    Member,
    Viewer,
    /// A custom role of the organization: reads like a viewer (metering's writes and seats
    /// follow the system roles).
    Custom,
    /// The service role, acting for the organization rather than as one of its members.
    Service,
}

impl Role {
    pub fn parse(role: &str) -> Option<Role> {
        match role {
            "owner" => Some(Role::Owner),
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            "viewer" => Some(Role::Viewer),
            _ => Some(Role::Custom),
        }
    }

    /// Viewers and custom roles read; owners, admins and members record usage.
    pub fn records_usage(self) -> bool {
        !matches!(self, Role::Viewer | Role::Custom)
    }

    /// Owners and admins add members.
    pub fn adds_members(self) -> bool {
        matches!(self, Role::Owner | Role::Admin | Role::Service)
    }
}

/// A limit and its usage: the one reading shared by `check_feature_access`, `record_usage`
/// and `get_usage_summary` of what is left and whether one more is allowed.
pub struct LimitStatus<'a> {
    pub meter: &'a Meter,
    pub limit: Limit,
    pub enforcement: Enforcement,
    pub usage: f64,
}

impl<'a> LimitStatus<'a> {
    pub fn of(
        catalog: &'a PlanCatalog,
        plan: &str,
        feature_key: &'a str,
        meter: &'a Meter,
        usage: f64,
    ) -> Self {
        LimitStatus {
            meter,
            limit: catalog.limit(plan, feature_key),
            enforcement: catalog.enforcement(plan, feature_key),
            usage,
        }
    }

    /// Over a (soft) limit: recorded as overage.
    pub fn over_limit(&self) -> bool {
        matches!(self.limit, Limit::Capped(n) if self.usage > n as f64)
    }

    /// Why `role` may not do one more now, if it may not.
    fn refusal(&self, role: Option<Role>) -> Option<&'static str> {
        let role_may = match (self.meter.measure, role) {
            (_, None) => false,
            (Measure::Members, Some(r)) => r.adds_members(),
            (Measure::Sum | Measure::UniqueUsers, Some(r)) => r.records_usage(),
            (Measure::Unmetered, Some(_)) => true,
        };
        match self.limit {
            Limit::NotGranted => Some("not_granted"),
            _ if !role_may => Some(match self.meter.measure {
                Measure::Members => "role_cannot_add_members",
                _ => "role_cannot_record_usage",
            }),
            Limit::Capped(n) if self.enforcement == Enforcement::Hard && self.usage >= n as f64 => {
                Some("limit_reached")
            }
            _ => None,
        }
    }

    /// The answer's limit fields: limit, unlimited, usage, remaining, allowed (for `role`,
    /// one more now), reason, enforcement, over_limit, window.
    pub fn describe(&self, role: Option<Role>, out: &mut Map<String, Value>) {
        let remaining = match self.limit {
            Limit::Unlimited => Value::Null,
            Limit::Capped(n) => number((n as f64 - self.usage).max(0.0)),
            Limit::NotGranted => json!(0),
        };
        let reason = self.refusal(role);
        out.insert("type".into(), json!("limit"));
        out.insert("limit".into(), json!(self.limit.value()));
        out.insert("unlimited".into(), json!(self.limit == Limit::Unlimited));
        out.insert("usage".into(), number(self.usage));
        out.insert("remaining".into(), remaining);
        out.insert("allowed".into(), json!(reason.is_none()));
        out.insert("reason".into(), json!(reason));
        out.insert("enforcement".into(), json!(self.enforcement.as_str()));
        out.insert("over_limit".into(), json!(self.over_limit()));
        out.insert("window".into(), json!(self.meter.window.as_str()));
    }
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
    let role = s.member_role.as_deref().and_then(Role::parse);
    let plan_flags = catalog.flags(&s.plan);
    match feature {
        Feature::Limit(meter) => {
            LimitStatus::of(catalog, &s.plan, feature_key, meter, s.usage.unwrap_or(0.0))
                .describe(role, &mut out);
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
pub fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

static SUMMARY_STATE: Statement = Statement::read(
    "SELECT (SELECT m.role FROM organization_members m WHERE m.organization_id = $1 AND m.user_id = $2),
            coalesce(plan_in_effect(s.plan, s.status), 'free'),
            s.status,
            EXISTS (SELECT 1 FROM organizations o WHERE o.id = $1),
            usage_bucket_end('monthly', now())
     FROM (SELECT) AS one
     LEFT JOIN org_subscriptions s ON s.organization_id = $1",
    &[crate::spi::types::UUID, crate::spi::types::UUID],
);

/// Everything a billing page or a UI gate needs about `org_id` in one call: every limit of
/// its plan (usage, limit, remaining, percent, window, when it resets, whether the caller may
/// do one more and if not why) and every flag. For the calling user, who must be a member; the
/// service role may ask about any organization.
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn get_usage_summary(org_id: Option<Uuid>) -> RawJsonb {
    let org = errors::required(org_id, "org_id");
    let service = auth_context::caller_is_service_role();
    let summary = Spi::connect_mut(|client| {
        let caller = auth_context::current_uid(client);
        if caller.is_none() && !service {
            errors::insufficient_privilege("get_usage_summary: not authenticated");
        }
        let catalog = plan_catalog::get(client);
        let what = "reading the usage summary";
        let state = client
            .select(
                SUMMARY_STATE.prepared(client),
                Some(1),
                &[org.into(), caller.into()],
            )
            .or_fail(what);
        let row = state.first();
        let member_role: Option<String> = row.get(1).or_fail(what);
        let plan: String = row.get(2).or_fail(what).unwrap_or_else(|| "free".into());
        let status: Option<String> = row.get(3).or_fail(what);
        let exists: bool = row.get(4).or_fail(what).unwrap_or(false);
        let resets_at: Option<TimestampWithTimeZone> = row.get(5).or_fail(what);
        let role = match (member_role.as_deref().and_then(Role::parse), service) {
            (Some(r), false) => r,
            (_, true) if exists => Role::Service,
            _ => errors::insufficient_privilege(
                "get_usage_summary: the caller is not a member of this organization",
            ),
        };
        let mut limits = Map::new();
        for (key, meter) in catalog.all_limits() {
            let usage = meters::usage(client, org, meter);
            let status = LimitStatus::of(&catalog, &plan, key, meter, usage);
            let mut out = Map::new();
            status.describe(Some(role), &mut out);
            out.remove("type");
            let percent = match status.limit {
                Limit::Capped(n) if n > 0 => number((usage / n as f64 * 10000.0).round() / 100.0),
                Limit::Capped(_) => json!(100),
                _ => Value::Null,
            };
            out.insert("percent".into(), percent);
            out.insert(
                "resets_at".into(),
                match meter.window {
                    Window::Month => json!(resets_at.map(|t| t.to_iso_string())),
                    _ => Value::Null,
                },
            );
            limits.insert(key.to_string(), Value::Object(out));
        }
        json!({
            "organization_id": org.to_string(),
            "plan": plan,
            "subscription_status": status,
            "role": match role { Role::Service => json!("service_role"), _ => json!(member_role) },
            "limits": limits,
            "flags": catalog.flags(&plan).cloned().unwrap_or_default(),
        })
    });
    jsonb::build(&summary)
}

/// The seat limit: an organization may not have more members than its plan's `max_seats`
/// (the same `Limit` reading as `check_feature_access`), nor, on a quantity-based subscription,
/// than the seats it bought. `seats.members` counts the new member.
pub fn enforce_seat_limit(client: &mut SpiClient<'_>, seats: &Seats) {
    let plan = seats.plan.as_str();
    let limit = plan_catalog::get(client).limit(plan, "max_seats");
    if !limit.allows((seats.members - 1) as f64) {
        let message = match limit {
            Limit::Capped(n) => {
                format!("the organization has used all {n} seats of its {plan} plan")
            }
            _ => format!(
                "the {plan} plan grants no seats (it has no max_seats row in plan_features)"
            ),
        };
        errors::raise_with_hint(
            pgrx::PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            message,
            "Upgrade the plan or remove a member first.",
        )
    }
    if let Some(purchased) = seats.purchased.filter(|&n| seats.members > n) {
        errors::raise_with_hint(
            pgrx::PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("the organization has used all {purchased} seats its subscription pays for"),
            "Buy more seats first: SELECT request_seats(org_id, quantity) queues the quantity for the \
             seat manager (pending_seat_updates); the provider's confirmation raises the limit.",
        )
    }
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
