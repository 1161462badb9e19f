//! Coupons (sql/coupons.sql): the service role keeps the catalog; `redeem_coupon` lets an
//! organization's billing managers redeem a code once, within its validity window, for the
//! plans it applies to and while redemptions remain. The cap is enforced by the redemption
//! count trigger in SQL (one place, whoever inserts the redemption).
use pgrx::prelude::*;
use pgrx::Uuid;
use serde_json::json;

use crate::errors;
use crate::jsonb::{self, RawJsonb};
use crate::members::caller_access;
use crate::spi::{self, types, Expect, Statement};

pgrx::extension_sql_file!(
    "../sql/coupons.sql",
    name = "coupons",
    requires = ["billing", "roles", "backup", redeem_coupon]
);

static COUPON: Statement = Statement::read(
    "SELECT c.id, c.active, c.valid_from > now(), c.valid_until <= now(),
            (SELECT string_agg(p.plan, ', ' ORDER BY p.plan) FROM coupon_plans p WHERE p.coupon_id = c.id),
            EXISTS (SELECT 1 FROM coupon_plans p WHERE p.coupon_id = c.id AND p.plan = $2),
            EXISTS (SELECT 1 FROM plans p WHERE p.key = $2),
            jsonb_build_object('code', c.code, 'name', c.name, 'discount_type', c.discount_type,
                               'percent_off', c.percent_off, 'amount_off', c.amount_off, 'currency', c.currency,
                               'duration', c.duration, 'duration_in_months', c.duration_in_months,
                               'provider', c.provider, 'provider_coupon_id', c.provider_coupon_id)::text
     FROM coupons c WHERE c.code = upper(btrim($1))",
    &[types::TEXT, types::TEXT],
);

static EFFECTIVE_PLAN: Statement = Statement::read("SELECT org_effective_plan($1)", &[types::UUID]);

static REDEEM: Statement = Statement::write(
    "INSERT INTO coupon_redemptions (coupon_id, organization_id, plan, redeemed_by)
     VALUES ($1, $2, $3, auth.uid())
     ON CONFLICT (coupon_id, organization_id) DO NOTHING
     RETURNING id",
    &[types::UUID, types::UUID, types::TEXT],
);

/// Redeems coupon `code` for organization `org_id` (for `plan`, the plan being bought; by
/// default the plan in effect). Needs `billing.manage`. Returns the discount for the
/// application to apply at the provider's checkout. Refusals: 22023 (unknown, inactive, not
/// yet or no longer valid, not for this plan), 23505 (already redeemed by this organization),
/// 54000 (redeemed as often as it may be).
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn redeem_coupon(
    org_id: Option<Uuid>,
    code: Option<&str>,
    plan: default!(Option<&str>, "NULL"),
) -> RawJsonb {
    let org = errors::required(org_id, "org_id");
    let code = errors::required(code, "code");
    let action = "redeem_coupon";
    let answer = Spi::connect_mut(|client| {
        let access = caller_access(client, org, action);
        access.require("billing.manage", action);
        let plan = match plan {
            Some(plan) => plan.to_string(),
            None => spi::one::<String>(client, &EFFECTIVE_PLAN, &[org.into()], "reading the plan")
                .unwrap_or_else(|| "free".into()),
        };
        let what = "reading the coupon";
        let (coupon, summary) = {
            let table = client
                .select(
                    COUPON.prepared(client),
                    Some(1),
                    &[code.into(), plan.as_str().into()],
                )
                .or_fail(what);
            if table.is_empty() {
                errors::invalid_parameter(format!("{action}: no coupon \"{code}\""));
            }
            let row = table.first();
            let id: Uuid = errors::required(row.get(1).or_fail(what), "coupon id");
            if !row.get::<bool>(2).or_fail(what).unwrap_or(false) {
                errors::invalid_parameter(format!("{action}: coupon \"{code}\" is not active"));
            }
            if row.get::<bool>(3).or_fail(what).unwrap_or(false) {
                errors::invalid_parameter(format!("{action}: coupon \"{code}\" is not valid yet"));
            }
            if row.get::<bool>(4).or_fail(what).unwrap_or(false) {
                errors::invalid_parameter(format!("{action}: coupon \"{code}\" has expired"));
            }
            if !row.get::<bool>(7).or_fail(what).unwrap_or(false) {
                errors::invalid_parameter(format!("{action}: no plan \"{plan}\""));
            }
            if let Some(plans) = row.get::<String>(5).or_fail(what) {
                if !row.get::<bool>(6).or_fail(what).unwrap_or(false) {
                    errors::invalid_parameter(format!(
                        "{action}: coupon \"{code}\" applies to the plans {plans} only, not \"{plan}\""
                    ));
                }
            }
            let summary: String = errors::required(row.get(8).or_fail(what), "coupon");
            (id, summary)
        };
        let Some(redemption) = spi::one_mut::<Uuid>(
            client,
            &REDEEM,
            &[coupon.into(), org.into(), plan.as_str().into()],
            "redeeming the coupon",
        ) else {
            errors::unique_violation(format!(
                "{action}: the organization has already redeemed coupon \"{code}\""
            ))
        };
        let mut answer: serde_json::Value = serde_json::from_str(&summary)
            .unwrap_or_else(|e| errors::internal("reading the coupon", e));
        answer["redemption_id"] = json!(redemption.to_string());
        answer["organization_id"] = json!(org.to_string());
        answer["plan"] = json!(plan);
        answer
    });
    jsonb::build(&answer)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn codes_are_stored_upper_case_and_the_cap_counts_every_redemption() {
        Spi::run(
            "INSERT INTO auth.users (id, email) VALUES
                 ('00000000-0000-0000-0000-0000000000c1', 'c1@example.com'),
                 ('00000000-0000-0000-0000-0000000000c2', 'c2@example.com');
             INSERT INTO coupons (code, discount_type, percent_off, max_redemptions) VALUES (' launch50 ', 'percent', 50, 1);
             INSERT INTO coupon_redemptions (coupon_id, organization_id)
             SELECT c.id, o.id FROM coupons c, organizations o
             WHERE c.code = 'LAUNCH50' AND o.owner_id = '00000000-0000-0000-0000-0000000000c1'",
        )
        .unwrap();
        let redeemed =
            Spi::get_one::<i32>("SELECT times_redeemed FROM coupons WHERE code = 'LAUNCH50'")
                .unwrap();
        assert_eq!(redeemed, Some(1));
        let refused = crate::testing::error_of(
            "INSERT INTO coupon_redemptions (coupon_id, organization_id)
             SELECT c.id, o.id FROM coupons c, organizations o
             WHERE c.code = 'LAUNCH50' AND o.owner_id = '00000000-0000-0000-0000-0000000000c2'",
        )
        .unwrap_or_default();
        assert!(
            refused.starts_with("54000: coupon LAUNCH50 has been redeemed"),
            "{refused}"
        );
    }
}
