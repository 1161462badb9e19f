//! Entitlements: plan limits and feature flags, answered per request, and the seat limit
//! (sql/entitlements.sql).
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::Uuid;
use serde_json::{json, Map, Value};

use crate::auth_context;
use crate::errors;
use crate::function_memo::Memo;
use crate::index_reads::{self, Key, Probe};
use crate::jsonb::{self, RawJsonb};
use crate::metering::Period;
use crate::meters;
use crate::organizations::Seats;
#[allow(unused_imports)] // named in `requires` above
use crate::plan_catalog::invalidate_plan_catalog;
use crate::plan_catalog::{self, Enforcement, Feature, Limit, Measure, Meter, PlanCatalog, Window};
use crate::spi::{self, types, Statement};

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

/// What `user_id` may do in `org_id` regarding `feature_key`:
/// `{"limit": 100, "usage": 12, "remaining": 88, "allowed": true, "plan": "free", ...}`
/// for limits (`-1` = unlimited), `{"enabled": true, "allowed": true, ...}` for boolean flags.
///
/// The service role may ask about anyone; any other caller only about themself. A user who
/// is not a member of the organization learns nothing about it (42501). Unknown keys: 22023.
///
/// Called on every request, so it runs no query in the steady state: plan limits and flags
/// come from the per-backend `plan_catalog`, `auth.uid()` and `plan_in_effect` answers are
/// remembered (src/function_memo.rs), and the membership, the subscription and the usage (the
/// monthly rollup row and the counter rows not folded yet, never the raw event log) are read
/// through their unique indexes under the statement's snapshot (src/index_reads.rs).
#[pg_extern(stable, security_definer, name = "check_feature_access")]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn feature_access(
    user_id: Option<Uuid>,
    feature_key: Option<&str>,
    org_id: Option<Uuid>,
) -> RawJsonb {
    let user_id = errors::required(user_id, "user_id");
    let feature_key = errors::required(feature_key, "feature_key");
    let org_id = errors::required(org_id, "org_id");
    let catalog = plan_catalog::cached().unwrap_or_else(|| Spi::connect_mut(plan_catalog::get));
    let caller = auth_context::current_uid_connecting();
    // Under the statement's snapshot (a STABLE function's), like each probe below.
    let (feature, member_role) = admit(&catalog, caller, user_id, feature_key, || {
        member_role(&catalog, org_id, user_id)
    });
    let (plan, status) = subscription(&catalog, org_id);
    let usage = match &feature {
        Feature::Limit(meter) => Some(meters::usage(&catalog, org_id, meter)),
        _ => None,
    };
    let state = RequestState {
        member_role,
        plan,
        status,
        usage,
    };
    jsonb::build(&Value::Object(describe(
        feature_key,
        &feature,
        &catalog,
        state,
    )))
}

/// `check_feature_access`'s refusals, in this order (shared with 0.1.0's entry point): a
/// caller asking about someone else (42501), an unknown key (22023), a user who is not a
/// member (42501, read by `member_role` only then). The feature and the member's role.
pub fn admit<'c>(
    catalog: &'c PlanCatalog,
    caller: Option<Uuid>,
    user_id: Uuid,
    feature_key: &str,
    member_role: impl FnOnce() -> Option<String>,
) -> (Feature<'c>, String) {
    auth_context::check_self_or_service(caller, user_id, "check_feature_access");
    let Some(feature) = catalog.feature(feature_key) else {
        errors::invalid_parameter(format!(
            "check_feature_access: unknown feature key \"{feature_key}\""
        ))
    };
    let Some(role) = member_role() else {
        errors::insufficient_privilege(
            "check_feature_access: the user is not a member of this organization",
        )
    };
    (feature, role)
}

/// `user`'s role in `org`, if a member.
pub fn member_role(catalog: &PlanCatalog, org: Uuid, user: Uuid) -> Option<String> {
    let probe = Probe {
        table: c"organization_members",
        index: c"organization_members_organization_id_user_id_key",
        keys: &[Key::Uuid(org), Key::Uuid(user)],
        columns: &[c"role"],
    };
    let mut role = None;
    index_reads::scan(catalog.schema, &probe, |row| {
        role = index_reads::text(row[0]);
    });
    role
}

/// The plan in effect for `org` (`plan_in_effect` of its subscription; free without one) and
/// the subscription's status.
pub fn subscription(catalog: &PlanCatalog, org: Uuid) -> (String, Option<String>) {
    let probe = Probe {
        table: c"org_subscriptions",
        index: c"org_subscriptions_organization_id_key",
        keys: &[Key::Uuid(org)],
        columns: &[c"plan", c"status"],
    };
    let mut found = (None, None);
    index_reads::scan(catalog.schema, &probe, |row| {
        found = (index_reads::text(row[0]), index_reads::text(row[1]));
    });
    let (plan, status) = found;
    (plan_in_effect(plan, status.clone()), status)
}

/// Whether organization `org` exists.
pub fn organization_exists(catalog: &PlanCatalog, org: Uuid) -> bool {
    let probe = Probe {
        table: c"organizations",
        index: c"organizations_pkey",
        keys: &[Key::Uuid(org)],
        columns: &[],
    };
    let mut exists = false;
    index_reads::scan(catalog.schema, &probe, |_| exists = true);
    exists
}

static PLAN_IN_EFFECT: Statement = Statement::read(
    "SELECT coalesce(plan_in_effect($1, $2), 'free')",
    &[types::TEXT, types::TEXT],
);

thread_local! {
    static PLANS_IN_EFFECT: Memo<(Option<String>, Option<String>), String> = Memo::new();
}

/// `plan_in_effect(plan, status)` (sql/entitlements.sql), remembered per backend.
fn plan_in_effect(plan: Option<String>, status: Option<String>) -> String {
    let key = (plan, status);
    if let Some(p) = PLANS_IN_EFFECT.with(|m| m.get(&key)) {
        return p;
    }
    let (plan, status) = (key.0.clone(), key.1.clone());
    PLANS_IN_EFFECT.with(|m| {
        m.compute(key, || {
            Spi::connect(|client| {
                spi::one::<String>(
                    client,
                    &PLAN_IN_EFFECT,
                    &[plan.as_deref().into(), status.as_deref().into()],
                    "reading the plan in effect",
                )
                .unwrap_or_else(|| "free".into())
            })
        })
    })
}

/// What a request reads that changes per request.
pub struct RequestState {
    pub member_role: String,
    pub plan: String,
    pub status: Option<String>,
    pub usage: Option<f64>,
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

/// The answer's fields for `feature` (shared with 0.1.0's entry point).
pub fn describe(
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
    let role = Role::parse(&s.member_role);
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

/// Everything a billing page or a UI gate needs about `org_id` in one call: every limit of
/// its plan (usage, limit, remaining, percent, window, when it resets, whether the caller may
/// do one more and if not why) and every flag. For the calling user, who must be a member; the
/// service role may ask about any organization.
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn get_usage_summary(org_id: Option<Uuid>) -> RawJsonb {
    let org = errors::required(org_id, "org_id");
    let service = auth_context::caller_is_service_role();
    let caller = auth_context::current_uid_connecting();
    if caller.is_none() && !service {
        errors::insufficient_privilege("get_usage_summary: not authenticated");
    }
    let catalog = plan_catalog::cached().unwrap_or_else(|| Spi::connect_mut(plan_catalog::get));
    // Read like check_feature_access: through the indexes, under the statement's snapshot.
    let member_role = caller.and_then(|uid| member_role(&catalog, org, uid));
    let (plan, status) = subscription(&catalog, org);
    let exists = service && organization_exists(&catalog, org);
    // SAFETY: reads the transaction's start time, which now() returns.
    let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    let resets_at = TimestampWithTimeZone::try_from(Period::Monthly.bucket(now).1).ok();
    let role = match (member_role.as_deref().and_then(Role::parse), service) {
        (Some(r), false) => r,
        (_, true) if exists => Role::Service,
        _ => errors::insufficient_privilege(
            "get_usage_summary: the caller is not a member of this organization",
        ),
    };
    let mut limits = Map::new();
    for (key, meter) in catalog.all_limits() {
        let usage = meters::usage(&catalog, org, meter);
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
    jsonb::build(&json!({
        "organization_id": jsonb::uuid_text(&org),
        "plan": plan,
        "subscription_status": status,
        "role": match role { Role::Service => json!("service_role"), _ => json!(member_role) },
        "limits": limits,
        "flags": catalog.flags(&plan).cloned().unwrap_or_default(),
    }))
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
        let org = crate::testing::personal_organization_of_new_user(ADA, "ada@e.example");
        Spi::run(&format!(
            "INSERT INTO auth.users (id, email) VALUES ('{EVE}', 'eve@e.example')"
        ))
        .unwrap();
        org
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

    /// Usage is the folded monthly rollup plus every writer's counter row of this month's
    /// bucket, added as numerics (0.1 + 0.2 + 0.4 is 0.7, not 0.7000000000000001); other
    /// months, other event types and daily rows do not count. A lifetime meter adds every
    /// month.
    #[pg_test]
    fn usage_adds_the_rollup_and_every_writers_counters_exactly() {
        let org = setup();
        Spi::run(&format!(
            "UPDATE org_subscriptions SET plan = 'pro' WHERE organization_id = '{org}';
             INSERT INTO usage_aggregations (organization_id, event_type, period, period_start, period_end, total_quantity)
             SELECT '{org}', t, 'monthly', usage_bucket_start('monthly', m), usage_bucket_end('monthly', m), q
             FROM (VALUES ('api_call', now(), 0.1), ('api_call', now() - interval '40 days', 1000),
                          ('record_created', now(), 0.25), ('record_created', now() - interval '40 days', 2)) AS v (t, m, q);
             INSERT INTO usage_aggregations (organization_id, event_type, period, period_start, period_end, total_quantity)
             VALUES ('{org}', 'api_call', 'daily', usage_bucket_start('daily', now()), usage_bucket_end('daily', now()), 500);
             INSERT INTO usage_counters (organization_id, event_type, period, period_start, writer, total_quantity)
             SELECT '{org}', t, p, usage_bucket_start(p, m), w, q
             FROM (VALUES ('api_call', 'monthly', now(), 1, 0.2), ('api_call', 'monthly', now(), 2, 0.4),
                          ('api_call', 'monthly', now() - interval '40 days', 1, 70),
                          ('api_call', 'daily', now(), 1, 300), ('automation_run', 'monthly', now(), 1, 9),
                          ('record_created', 'monthly', now() - interval '40 days', 3, 0.5)) AS v (t, p, m, w, q)"
        ))
        .unwrap();
        let a = access(ADA, "max_api_calls_per_month", &org);
        assert_eq!(a["usage"].to_string(), "0.7");
        assert_eq!(
            access(ADA, "max_records", &org)["usage"].to_string(),
            "2.75"
        );
        // get_usage_summary reads the same way.
        let summary = Spi::get_one::<pgrx::JsonB>(&format!("SELECT get_usage_summary('{org}')"))
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(
            summary["limits"]["max_api_calls_per_month"]["usage"].to_string(),
            "0.7"
        );
        assert_eq!(summary["limits"]["max_automations"]["usage"], 9);
    }

    /// The plan in effect is plan_in_effect()'s answer, remembered per backend only until
    /// the function is redefined.
    #[pg_test]
    fn a_redefined_plan_in_effect_is_followed_at_once() {
        let org = setup();
        Spi::run(&format!(
            "UPDATE org_subscriptions SET plan = 'enterprise', status = 'canceled' WHERE organization_id = '{org}'"
        ))
        .unwrap();
        assert_eq!(access(ADA, "sso", &org)["plan"], "free");
        Spi::run(
            "CREATE OR REPLACE FUNCTION plan_in_effect(plan text, status text) RETURNS text
             LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT plan $$",
        )
        .unwrap();
        let a = access(ADA, "sso", &org);
        assert_eq!(a["plan"], "enterprise");
        assert_eq!(a["enabled"], true);
    }
}
