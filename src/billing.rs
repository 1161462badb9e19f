//! Billing: organization-level customers and subscriptions (sql/billing.sql).
//! Provider webhooks write these tables as the service role; saas_core only starts free plans.
use pgrx::spi::SpiClient;
use pgrx::Uuid;

use crate::spi::{self, types, Statement};

pgrx::extension_sql_file!(
    "../sql/billing.sql",
    name = "billing",
    requires = ["organizations"]
);

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
