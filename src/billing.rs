//! Billing: plans and prices as rows, organization-level customers and subscriptions
//! (sql/billing.sql), and the billing page's one call, `get_billing_status`. Provider webhooks
//! write subscriptions through `apply_billing_event` (billing_events.rs).
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::Uuid;
use serde_json::{json, Value};

use crate::jsonb::{self, RawJsonb};
use crate::members::caller_access;
use crate::plan_catalog;
use crate::spi::{self, types, Expect, Statement};

pgrx::extension_sql_file!(
    "../sql/billing.sql",
    name = "billing",
    requires = ["organizations", get_billing_status]
);

static STATUS: Statement = Statement::read(
    "SELECT org_effective_plan(o.id), s.plan, s.status, s.billing_type, o.member_count, s.seats,
            s.current_period_start::text, s.current_period_end::text, s.cancel_at_period_end,
            s.trial_ends_at::text, s.provider, c.billing_email,
            (SELECT p.desired_quantity FROM pending_seat_updates p
             WHERE p.organization_id = o.id AND p.status = 'pending'),
            (SELECT jsonb_build_object('type', m.type, 'brand', m.brand, 'last4', m.last4,
                                       'exp_month', m.exp_month, 'exp_year', m.exp_year)::text
             FROM payment_methods m WHERE m.organization_id = o.id AND m.is_default),
            (SELECT coalesce(jsonb_agg(jsonb_build_object(
                        'id', i.id, 'number', i.number, 'amount_due', i.amount_due,
                        'amount_remaining', i.amount_remaining, 'currency', i.currency, 'due_at', i.due_at,
                        'hosted_invoice_url', i.hosted_invoice_url)
                        ORDER BY i.due_at NULLS LAST, i.provider_created_at), '[]')::text
             FROM invoices i WHERE i.organization_id = o.id AND i.status = 'open')
     FROM organizations o
     LEFT JOIN org_subscriptions s ON s.organization_id = o.id
     LEFT JOIN billing_customers c ON c.organization_id = o.id
     WHERE o.id = $1",
    &[types::UUID],
);

/// JSON our own statement built (jsonb_build_object of columns), or null.
fn parsed(text: Option<String>) -> Value {
    text.map(|t| {
        serde_json::from_str(&t).unwrap_or_else(|e| crate::errors::internal("reading billing", e))
    })
    .unwrap_or(Value::Null)
}

/// What a billing page shows, in one call: the plan in effect and the subscription's status for
/// every member; for those with `billing.read` (owners, admins) and the service role also the
/// billing model, seats used / purchased / the plan's limit, the period, cancellation, trial,
/// the billing email, a seat quantity waiting for the provider, the default payment method
/// (type, brand, last4, expiry) and the open invoices.
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn get_billing_status(org_id: Option<Uuid>) -> RawJsonb {
    let org = crate::errors::required(org_id, "org_id");
    let answer = Spi::connect_mut(|client| {
        let access = caller_access(client, org, "get_billing_status");
        let what = "reading the billing status";
        let mut answer = {
            let table = client
                .select(STATUS.prepared(client), Some(1), &[org.into()])
                .or_fail(what);
            let row = table.first();
            let text = |i: usize| -> Value { json!(row.get::<String>(i).or_fail(what)) };
            let quantity_based =
                row.get::<String>(4).or_fail(what).as_deref() == Some("quantity_based");
            json!({
                "organization_id": org.to_string(),
                "plan": row.get::<String>(1).or_fail(what).unwrap_or_else(|| "free".into()),
                "status": text(3),
                "subscription_plan": text(2),
                "billing_type": text(4),
                "seats": {
                    "used": row.get::<i32>(5).or_fail(what).unwrap_or(0),
                    "purchased": if quantity_based { json!(row.get::<i32>(6).or_fail(what)) } else { Value::Null },
                    "pending_quantity": row.get::<i32>(13).or_fail(what),
                },
                "current_period_start": text(7),
                "current_period_end": text(8),
                "cancel_at_period_end": row.get::<bool>(9).or_fail(what).unwrap_or(false),
                "trial_ends_at": text(10),
                "provider": text(11),
                "billing_email": text(12),
                "payment_method": parsed(row.get::<String>(14).or_fail(what)),
                "open_invoices": parsed(row.get::<String>(15).or_fail(what)),
            })
        };
        if !access.has("billing.read") {
            // Members see the plan in effect and the subscription's status only.
            return json!({
                "organization_id": answer["organization_id"],
                "plan": answer["plan"],
                "status": answer["status"],
            });
        }
        let plan = answer["plan"].as_str().unwrap_or("free").to_string();
        answer["seats"]["plan_limit"] =
            json!(plan_catalog::get(client).limit(&plan, "max_seats").value());
        answer
    });
    jsonb::build(&answer)
}

static START_FREE: Statement = Statement::write(
    "INSERT INTO org_subscriptions (organization_id, plan, status, seats)
     VALUES ($1, 'free', 'active', 1)
     ON CONFLICT (organization_id) DO NOTHING",
    &[types::UUID],
);

/// Puts `org` on the free plan unless it already has a subscription.
pub fn start_free_subscription(client: &mut SpiClient<'_>, org: Uuid) {
    spi::run(client, &START_FREE, &[org.into()], "starting the free plan");
}

static LOCK_SUBSCRIPTION: Statement = Statement::write(
    "SELECT 1 FROM org_subscriptions WHERE organization_id = $1 FOR UPDATE",
    &[types::UUID],
);

/// Locks `org`'s subscription row (creating the free one if needed) until the transaction
/// ends: the organization's billing changes (seat requests, payment methods) apply in turn.
pub fn lock_subscription(client: &mut SpiClient<'_>, org: Uuid) {
    start_free_subscription(client, org);
    spi::run(
        client,
        &LOCK_SUBSCRIPTION,
        &[org.into()],
        "locking the subscription",
    );
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn billing_type_accepts_the_three_models_only() {
        Spi::run("INSERT INTO auth.users (id, email) VALUES ('00000000-0000-0000-0000-0000000000b1', 'b@example.com')").unwrap();
        for t in ["volume", "usage_based", "quantity_based"] {
            Spi::run(&format!(
                "UPDATE org_subscriptions SET billing_type = '{t}'
                 WHERE organization_id = (SELECT id FROM organizations WHERE owner_id = '00000000-0000-0000-0000-0000000000b1')"
            ))
            .unwrap();
        }
        let rejected = Spi::get_one::<bool>(
            "SELECT NOT EXISTS (SELECT 1 FROM pg_constraint
                                WHERE conname = 'org_subscriptions_billing_type_check'
                                  AND pg_get_constraintdef(oid) NOT LIKE '%quantity_based%')",
        )
        .unwrap();
        assert_eq!(rejected, Some(true));
    }

    #[pg_test(
        error = "new row for relation \"org_subscriptions\" violates check constraint \"org_subscriptions_billing_type_check\""
    )]
    fn unknown_billing_type_is_rejected() {
        Spi::run("INSERT INTO auth.users (id, email) VALUES ('00000000-0000-0000-0000-0000000000b2', 'c@example.com')").unwrap();
        Spi::run("UPDATE org_subscriptions SET billing_type = 'invalid_type'").unwrap();
    }
}
