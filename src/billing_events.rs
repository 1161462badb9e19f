//! Payment provider webhooks (sql/billing_events.sql): `apply_billing_event(provider, event)`
//! applies a Stripe Event or a Lemon Squeezy webhook body to the organization's subscription
//! and customer, once and in order, and logs it with its outcome.
//!
//! * Once: `billing_events` has one row per (provider, event key); a redelivery of an applied,
//!   stale or ignored event returns the first outcome. Failed and unmapped events are tried
//!   again when delivered again (the provider retries when the app answers non-2xx).
//! * In order: each subscription and customer row keeps the provider time of the newest event
//!   applied to it (`provider_synced_at`); an older event is logged as stale and changes
//!   nothing. The subscription row is locked while an event is applied, so related events
//!   delivered at once serialize.
//! * Failures (an unknown price, a constraint the payload breaks) are caught in a
//!   subtransaction and logged with their error; nothing of the event is left half-applied.
//!
//! The payload never passes through a Rust JSON parser: fields are read with PostgreSQL's
//! jsonb operators inside the statements.
//!
//! Seats of quantity-based subscriptions: the seats the subscription pays for bound membership
//! (entitlements' seat limit); `request_seats` and removals queue the quantity the provider
//! should have in `pending_seat_updates`, and a subscription event echoing it marks it done.
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::Uuid;
use serde_json::json;

use crate::auth_context;
use crate::billing;
use crate::billing_ledger;
use crate::errors;
use crate::jsonb::{self, RawJsonb};
use crate::members::caller_access;
use crate::organizations::Seats;
use crate::spi::{self, types, Expect, Statement};

pgrx::extension_sql_file!(
    "../sql/billing_events.sql",
    name = "billing_events",
    requires = [
        "billing",
        "entitlements",
        "roles",
        apply_billing_event,
        request_seats
    ]
);

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Provider {
    Stripe,
    LemonSqueezy,
}

impl Provider {
    fn parse(name: &str) -> Provider {
        match name {
            "stripe" => Provider::Stripe,
            "lemon_squeezy" => Provider::LemonSqueezy,
            _ => errors::invalid_parameter(format!(
                "apply_billing_event: provider must be 'stripe' or 'lemon_squeezy', not \"{name}\""
            )),
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Provider::Stripe => "stripe",
            Provider::LemonSqueezy => "lemon_squeezy",
        }
    }
}

/// What is applied, decided from the event's type.
#[derive(Clone, Copy)]
enum Handler {
    Subscription,
    Checkout,
    Customer,
    CustomerDeleted,
    /// Ledger events (billing_ledger.rs).
    Invoice,
    PaymentMethod,
    PaymentMethodDetached,
    Charge,
    PaymentIntent(billing_ledger::PaymentStatus),
    SubscriptionPayment,
    Order,
    Unknown,
}

impl Handler {
    fn of(provider: Provider, event_type: &str) -> Handler {
        match (provider, event_type) {
            (
                Provider::Stripe,
                "customer.subscription.created"
                | "customer.subscription.updated"
                | "customer.subscription.deleted"
                | "customer.subscription.paused"
                | "customer.subscription.resumed"
                | "customer.subscription.trial_will_end"
                | "customer.subscription.pending_update_applied"
                | "customer.subscription.pending_update_expired",
            ) => Handler::Subscription,
            (
                Provider::Stripe,
                "checkout.session.completed" | "checkout.session.async_payment_succeeded",
            ) => Handler::Checkout,
            (Provider::Stripe, "customer.created" | "customer.updated") => Handler::Customer,
            (Provider::Stripe, "customer.deleted") => Handler::CustomerDeleted,
            (
                Provider::Stripe,
                "invoice.created"
                | "invoice.updated"
                | "invoice.finalized"
                | "invoice.paid"
                | "invoice.payment_succeeded"
                | "invoice.payment_failed"
                | "invoice.voided"
                | "invoice.marked_uncollectible",
            ) => Handler::Invoice,
            (
                Provider::Stripe,
                "payment_method.attached"
                | "payment_method.updated"
                | "payment_method.automatically_updated",
            ) => Handler::PaymentMethod,
            (Provider::Stripe, "payment_method.detached") => Handler::PaymentMethodDetached,
            (
                Provider::Stripe,
                "charge.succeeded" | "charge.failed" | "charge.pending" | "charge.refunded",
            ) => Handler::Charge,
            (Provider::Stripe, "payment_intent.succeeded") => {
                Handler::PaymentIntent(billing_ledger::PaymentStatus::Succeeded)
            }
            (Provider::Stripe, "payment_intent.payment_failed" | "payment_intent.canceled") => {
                Handler::PaymentIntent(billing_ledger::PaymentStatus::Failed)
            }
            (Provider::Stripe, "payment_intent.processing") => {
                Handler::PaymentIntent(billing_ledger::PaymentStatus::Pending)
            }
            (
                Provider::LemonSqueezy,
                "subscription_created"
                | "subscription_updated"
                | "subscription_cancelled"
                | "subscription_resumed"
                | "subscription_expired"
                | "subscription_paused"
                | "subscription_unpaused",
            ) => Handler::Subscription,
            (
                Provider::LemonSqueezy,
                "subscription_payment_success"
                | "subscription_payment_failed"
                | "subscription_payment_recovered"
                | "subscription_payment_refunded",
            ) => Handler::SubscriptionPayment,
            (Provider::LemonSqueezy, "order_created" | "order_refunded") => Handler::Order,
            _ => Handler::Unknown,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Applied,
    Stale,
    UnknownType,
    Unmapped,
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Stale => "stale",
            Outcome::UnknownType => "unknown_type",
            Outcome::Unmapped => "unmapped",
            Outcome::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Outcome {
        match text {
            "applied" => Outcome::Applied,
            "stale" => Outcome::Stale,
            "unknown_type" => Outcome::UnknownType,
            "unmapped" => Outcome::Unmapped,
            _ => Outcome::Failed,
        }
    }

    /// Failed and unmapped events are applied again when delivered again.
    fn is_final(self) -> bool {
        !matches!(self, Outcome::Failed | Outcome::Unmapped)
    }
}

// The envelope: key, type, object id and provider time. Lemon Squeezy sends no event id: its
// key is the event name, the object and the object's updated_at, the same on every redelivery.
static STRIPE_ENVELOPE: Statement = Statement::read(
    "SELECT e ->> 'id', e ->> 'type', e -> 'data' -> 'object' ->> 'id',
            to_timestamp((e ->> 'created')::float8),
            jsonb_typeof(e -> 'data' -> 'object') = 'object'
     FROM (SELECT $1::jsonb AS e) x",
    &[types::JSONB],
);

static LEMON_SQUEEZY_ENVELOPE: Statement = Statement::read(
    "SELECT concat_ws(':', e -> 'meta' ->> 'event_name', e -> 'data' ->> 'type', e -> 'data' ->> 'id',
                      e -> 'data' -> 'attributes' ->> 'updated_at'),
            e -> 'meta' ->> 'event_name', e -> 'data' ->> 'id',
            (e -> 'data' -> 'attributes' ->> 'updated_at')::timestamptz,
            jsonb_typeof(e -> 'data' -> 'attributes') = 'object'
     FROM (SELECT $1::jsonb AS e) x",
    &[types::JSONB],
);

pub(crate) struct Envelope {
    key: String,
    pub(crate) event_type: String,
    object_id: Option<String>,
    pub(crate) occurred_at: Option<pgrx::datum::TimestampWithTimeZone>,
}

fn read_envelope(client: &SpiClient<'_>, provider: Provider, event: RawJsonb) -> Envelope {
    let statement = match provider {
        Provider::Stripe => &STRIPE_ENVELOPE,
        Provider::LemonSqueezy => &LEMON_SQUEEZY_ENVELOPE,
    };
    let what = "reading the event";
    let table = client
        .select(statement.prepared(client), Some(1), &[event.into()])
        .or_fail(what);
    let row = table.first();
    let key: Option<String> = row.get(1).or_fail(what);
    let event_type: Option<String> = row.get(2).or_fail(what);
    let has_object: bool = row.get(5).or_fail(what).unwrap_or(false);
    match (key, event_type, has_object) {
        (Some(key), Some(event_type), true) if !key.is_empty() && !event_type.is_empty() => {
            Envelope {
                key,
                event_type,
                object_id: row.get(3).or_fail(what),
                occurred_at: row.get(4).or_fail(what),
            }
        }
        _ => errors::invalid_parameter(match provider {
            Provider::Stripe => {
                "apply_billing_event: not a Stripe Event (id, type, created and data.object expected)"
            }
            Provider::LemonSqueezy => {
                "apply_billing_event: not a Lemon Squeezy webhook (meta.event_name and data with attributes expected)"
            }
        }),
    }
}

static CLAIM: Statement = Statement::write(
    "INSERT INTO billing_events (provider, event_key, event_type, object_id, occurred_at, outcome, payload)
     VALUES ($1, $2, $3, $4, $5, 'failed', $6)
     ON CONFLICT (provider, event_key) DO NOTHING
     RETURNING id",
    &[
        types::TEXT,
        types::TEXT,
        types::TEXT,
        types::TEXT,
        types::TIMESTAMPTZ,
        types::JSONB,
    ],
);

static EARLIER_DELIVERY: Statement = Statement::write(
    "SELECT id, outcome, organization_id, error FROM billing_events
     WHERE provider = $1 AND event_key = $2
     FOR UPDATE",
    &[types::TEXT, types::TEXT],
);

static RETRY: Statement = Statement::write(
    "UPDATE billing_events SET attempts = attempts + 1, received_at = now(), payload = $2 WHERE id = $1",
    &[types::UUID, types::JSONB],
);

static RECORD: Statement = Statement::write(
    "UPDATE billing_events SET outcome = $2, organization_id = $3, error = $4 WHERE id = $1",
    &[types::UUID, types::TEXT, types::UUID, types::TEXT],
);

/// Applies a payment provider's webhook event (`provider` 'stripe' or 'lemon_squeezy', `event`
/// the body as sent) to the organization it is about, once and in order; returns the outcome.
/// Service role only. Answer 2xx to the provider for applied, stale and unknown_type; non-2xx
/// for unmapped and failed, so that it delivers the event again.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn apply_billing_event(provider: Option<&str>, event: RawJsonb) -> RawJsonb {
    if !auth_context::caller_is_service_role() {
        errors::insufficient_privilege(
            "apply_billing_event: only the service role applies billing events",
        );
    }
    let provider = Provider::parse(errors::required(provider, "provider"));
    let envelope = Spi::connect(|client| read_envelope(client, provider, event));
    let what = "logging the billing event";
    let (id, earlier) = Spi::connect_mut(|client| {
        let claimed = spi::one_mut::<Uuid>(
            client,
            &CLAIM,
            &[
                provider.as_str().into(),
                envelope.key.as_str().into(),
                envelope.event_type.as_str().into(),
                envelope.object_id.as_deref().into(),
                envelope.occurred_at.into(),
                event.into(),
            ],
            what,
        );
        if let Some(id) = claimed {
            return (id, None);
        }
        let table = client
            .update(
                EARLIER_DELIVERY.prepared(client),
                Some(1),
                &[provider.as_str().into(), envelope.key.as_str().into()],
            )
            .or_fail(what);
        let row = table.first();
        let id: Uuid = errors::required(row.get(1).or_fail(what), "billing event id");
        let outcome = Outcome::parse(&row.get::<String>(2).or_fail(what).unwrap_or_default());
        let org: Option<Uuid> = row.get(3).or_fail(what);
        let error: Option<String> = row.get(4).or_fail(what);
        if outcome.is_final() {
            return (id, Some((outcome, org, error)));
        }
        spi::run(client, &RETRY, &[id.into(), event.into()], what);
        (id, None)
    });
    if let Some((outcome, org, error)) = earlier {
        return answer(provider, &envelope, outcome, org, error.as_deref(), true);
    }
    let handler = Handler::of(provider, &envelope.event_type);
    let (outcome, org, error) =
        match spi::in_subtransaction(|| apply(provider, handler, &envelope, event)) {
            Ok((outcome, org)) => (outcome, org, None),
            Err(error) => (Outcome::Failed, None, Some(error)),
        };
    Spi::connect_mut(|client| {
        spi::run(
            client,
            &RECORD,
            &[
                id.into(),
                outcome.as_str().into(),
                org.into(),
                error.as_deref().into(),
            ],
            what,
        );
    });
    answer(provider, &envelope, outcome, org, error.as_deref(), false)
}

fn answer(
    provider: Provider,
    envelope: &Envelope,
    outcome: Outcome,
    org: Option<Uuid>,
    error: Option<&str>,
    duplicate: bool,
) -> RawJsonb {
    let mut out = json!({
        "provider": provider.as_str(),
        "event_key": envelope.key,
        "event_type": envelope.event_type,
        "object_id": envelope.object_id,
        "outcome": outcome.as_str(),
        "organization_id": org.map(|o| o.to_string()),
        "duplicate": duplicate,
    });
    if let Some(error) = error {
        out["error"] = json!(error);
    }
    jsonb::build(&out)
}

/// The event's effect, inside the subtransaction.
fn apply(
    provider: Provider,
    handler: Handler,
    envelope: &Envelope,
    event: RawJsonb,
) -> (Outcome, Option<Uuid>) {
    Spi::connect_mut(|client| match handler {
        Handler::Unknown => (Outcome::UnknownType, None),
        Handler::Subscription => apply_subscription(client, provider, envelope, event),
        Handler::Checkout => apply_checkout(client, event),
        Handler::Customer => apply_customer(client, envelope, event),
        Handler::CustomerDeleted => apply_customer_deleted(client, event),
        Handler::Invoice => billing_ledger::apply_stripe_invoice(client, envelope, event),
        Handler::PaymentMethod => {
            billing_ledger::apply_stripe_payment_method(client, envelope, event)
        }
        Handler::PaymentMethodDetached => {
            billing_ledger::apply_stripe_payment_method_detached(client, event)
        }
        Handler::Charge => billing_ledger::apply_stripe_charge(client, envelope, event),
        Handler::PaymentIntent(status) => {
            billing_ledger::apply_stripe_payment_intent(client, envelope, event, status)
        }
        Handler::SubscriptionPayment => {
            billing_ledger::apply_lemon_squeezy_subscription_payment(client, envelope, event)
        }
        Handler::Order => billing_ledger::apply_lemon_squeezy_order(client, envelope, event),
    })
}

/// The text columns of the one row `statement` reads from the event.
pub(crate) fn texts<const N: usize>(
    client: &SpiClient<'_>,
    statement: &'static Statement,
    event: RawJsonb,
    what: &str,
) -> [Option<String>; N] {
    let table = client
        .select(statement.prepared(client), Some(1), &[event.into()])
        .or_fail(what);
    let row = table.first();
    std::array::from_fn(|i| row.get::<String>(i + 1).or_fail(what))
}

// Who the event is about: the organization named in its metadata (Stripe metadata,
// Lemon Squeezy custom_data, a Checkout Session's client_reference_id), else the one whose
// customer or subscription it is. Nothing is guessed.
static ORGANIZATION_OF: Statement = Statement::read(
    "SELECT coalesce(
         (SELECT o.id FROM organizations o
          WHERE o.id = CASE WHEN $1 ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                            THEN $1::uuid END),
         (SELECT c.organization_id FROM billing_customers c WHERE c.provider = $2 AND c.provider_customer_id = $3),
         (SELECT s.organization_id FROM org_subscriptions s WHERE s.provider = $2 AND s.provider_subscription_id = $4))",
    &[types::TEXT, types::TEXT, types::TEXT, types::TEXT],
);

pub(crate) fn organization_of(
    client: &SpiClient<'_>,
    provider: Provider,
    named: Option<&str>,
    customer: Option<&str>,
    subscription: Option<&str>,
) -> Option<Uuid> {
    spi::one::<Uuid>(
        client,
        &ORGANIZATION_OF,
        &[
            named.into(),
            provider.as_str().into(),
            customer.into(),
            subscription.into(),
        ],
        "finding the organization",
    )
}

// The subscription's ids, the organization it names and its price, per provider shape. Stripe:
// the first item's price (the plan of older API versions); Lemon Squeezy: the variant.
static STRIPE_SUBSCRIPTION_IDS: Statement = Statement::read(
    "SELECT o ->> 'id', o ->> 'customer', nullif(o -> 'metadata' ->> 'organization_id', ''),
            coalesce(o -> 'items' -> 'data' -> 0 -> 'price' ->> 'id', o -> 'plan' ->> 'id')
     FROM (SELECT $1::jsonb -> 'data' -> 'object' AS o) x",
    &[types::JSONB],
);

static LEMON_SQUEEZY_SUBSCRIPTION_IDS: Statement = Statement::read(
    "SELECT d ->> 'id', d -> 'attributes' ->> 'customer_id',
            nullif(e -> 'meta' -> 'custom_data' ->> 'organization_id', ''),
            d -> 'attributes' ->> 'variant_id'
     FROM (SELECT $1::jsonb AS e, $1::jsonb -> 'data' AS d) x",
    &[types::JSONB],
);

static PRICE: Statement = Statement::read(
    "SELECT plan, billing_type FROM plan_prices WHERE provider = $1 AND provider_price_id = $2",
    &[types::TEXT, types::TEXT],
);

static LOCK_SUBSCRIPTION: Statement = Statement::write(
    "SELECT coalesce(provider_synced_at > $2, false) FROM org_subscriptions
     WHERE organization_id = $1 FOR UPDATE",
    &[types::UUID, types::TIMESTAMPTZ],
);

// The provider's subscription, as the organization's. Stripe has the billing period on the
// subscription in older API versions and on its items in newer ones. Lemon Squeezy's statuses
// map to Stripe's: on_trial is trialing; cancelled is still active until ends_at (cancel at
// period end); expired is canceled.
static SYNC_STRIPE_SUBSCRIPTION: Statement = Statement::write(
    "UPDATE org_subscriptions s SET
         plan = $2, billing_type = $3, status = o ->> 'status',
         seats = greatest(coalesce((o -> 'items' -> 'data' -> 0 ->> 'quantity')::int, (o ->> 'quantity')::int, 1), 1),
         provider = 'stripe', provider_customer_id = o ->> 'customer', provider_subscription_id = o ->> 'id',
         provider_price_id = $4,
         current_period_start = to_timestamp(coalesce(o ->> 'current_period_start',
                                                      o -> 'items' -> 'data' -> 0 ->> 'current_period_start')::float8),
         current_period_end = to_timestamp(coalesce(o ->> 'current_period_end',
                                                    o -> 'items' -> 'data' -> 0 ->> 'current_period_end')::float8),
         trial_start = to_timestamp((o ->> 'trial_start')::float8),
         trial_ends_at = to_timestamp((o ->> 'trial_end')::float8),
         cancel_at_period_end = coalesce((o ->> 'cancel_at_period_end')::boolean, false),
         canceled_at = to_timestamp((o ->> 'canceled_at')::float8),
         provider_synced_at = $5
     FROM (SELECT $6::jsonb -> 'data' -> 'object' AS o) x
     WHERE s.organization_id = $1",
    &[
        types::UUID,
        types::TEXT,
        types::TEXT,
        types::TEXT,
        types::TIMESTAMPTZ,
        types::JSONB,
    ],
);

static SYNC_LEMON_SQUEEZY_SUBSCRIPTION: Statement = Statement::write(
    "UPDATE org_subscriptions s SET
         plan = $2, billing_type = $3,
         status = CASE a ->> 'status' WHEN 'on_trial' THEN 'trialing' WHEN 'active' THEN 'active'
                                      WHEN 'paused' THEN 'paused' WHEN 'past_due' THEN 'past_due'
                                      WHEN 'unpaid' THEN 'unpaid' WHEN 'cancelled' THEN 'active'
                                      WHEN 'expired' THEN 'canceled' END,
         seats = greatest(coalesce((a -> 'first_subscription_item' ->> 'quantity')::int, 1), 1),
         provider = 'lemon_squeezy', provider_customer_id = a ->> 'customer_id', provider_subscription_id = $7,
         provider_price_id = $4,
         current_period_start = NULL,
         current_period_end = (a ->> 'renews_at')::timestamptz,
         trial_start = NULL,
         trial_ends_at = (a ->> 'trial_ends_at')::timestamptz,
         cancel_at_period_end = (a ->> 'status') = 'cancelled',
         canceled_at = CASE WHEN a ->> 'status' IN ('cancelled', 'expired') THEN (a ->> 'ends_at')::timestamptz END,
         provider_synced_at = $5
     FROM (SELECT $6::jsonb -> 'data' -> 'attributes' AS a) x
     WHERE s.organization_id = $1",
    &[
        types::UUID,
        types::TEXT,
        types::TEXT,
        types::TEXT,
        types::TIMESTAMPTZ,
        types::JSONB,
        types::TEXT,
    ],
);

// The organization's customer at the provider, as the event names it.
static LINK_CUSTOMER: Statement = Statement::write(
    "INSERT INTO billing_customers (organization_id, provider, provider_customer_id, billing_email)
     VALUES ($1, $2, $3, $4)
     ON CONFLICT (organization_id) DO UPDATE
         SET provider = excluded.provider, provider_customer_id = excluded.provider_customer_id,
             billing_email = coalesce(excluded.billing_email, billing_customers.billing_email)",
    &[types::UUID, types::TEXT, types::TEXT, types::TEXT],
);

fn link_customer(
    client: &mut SpiClient<'_>,
    org: Uuid,
    provider: Provider,
    customer: &str,
    email: Option<&str>,
) {
    spi::run(
        client,
        &LINK_CUSTOMER,
        &[
            org.into(),
            provider.as_str().into(),
            customer.into(),
            email.into(),
        ],
        "linking the customer",
    );
}

fn apply_subscription(
    client: &mut SpiClient<'_>,
    provider: Provider,
    envelope: &Envelope,
    event: RawJsonb,
) -> (Outcome, Option<Uuid>) {
    let what = "reading the subscription";
    let ids = match provider {
        Provider::Stripe => &STRIPE_SUBSCRIPTION_IDS,
        Provider::LemonSqueezy => &LEMON_SQUEEZY_SUBSCRIPTION_IDS,
    };
    let [subscription, customer, named, price] = texts(client, ids, event, what);
    let Some(org) = organization_of(
        client,
        provider,
        named.as_deref(),
        customer.as_deref(),
        subscription.as_deref(),
    ) else {
        return (Outcome::Unmapped, None);
    };
    // Locked first: an event older than what was applied is stale whatever it names.
    billing::start_free_subscription(client, org);
    let stale = spi::one_mut::<bool>(
        client,
        &LOCK_SUBSCRIPTION,
        &[org.into(), envelope.occurred_at.into()],
        what,
    )
    .unwrap_or(false);
    if stale {
        return (Outcome::Stale, Some(org));
    }
    let price = price.unwrap_or_else(|| {
        errors::invalid_parameter(
            "the subscription names no price (items.data[0].price.id / variant_id)",
        )
    });
    let (plan, billing_type) = {
        let table = client
            .select(
                PRICE.prepared(client),
                Some(1),
                &[provider.as_str().into(), price.as_str().into()],
            )
            .or_fail("reading the price");
        if table.is_empty() {
            errors::invalid_parameter(format!(
                "unknown {} price \"{price}\": add it to plan_prices",
                provider.as_str()
            ));
        }
        let row = table.first();
        (
            row.get::<String>(1).or_fail(what).unwrap_or_default(),
            row.get::<String>(2).or_fail(what).unwrap_or_default(),
        )
    };
    let (statement, extra) = match provider {
        Provider::Stripe => (&SYNC_STRIPE_SUBSCRIPTION, None),
        Provider::LemonSqueezy => (&SYNC_LEMON_SQUEEZY_SUBSCRIPTION, subscription.as_deref()),
    };
    let mut args = vec![
        org.into(),
        plan.as_str().into(),
        billing_type.as_str().into(),
        price.as_str().into(),
        envelope.occurred_at.into(),
        event.into(),
    ];
    if provider == Provider::LemonSqueezy {
        args.push(extra.into());
    }
    spi::run(client, statement, &args, "applying the subscription");
    spi::run(
        client,
        &SEATS_ECHOED,
        &[org.into()],
        "applying the subscription",
    );
    if let Some(customer) = customer.as_deref() {
        link_customer(client, org, provider, customer, None);
    }
    if provider == Provider::LemonSqueezy {
        billing_ledger::apply_lemon_squeezy_card(client, org, envelope, event);
    }
    (Outcome::Applied, Some(org))
}

static CHECKOUT_IDS: Statement = Statement::read(
    "SELECT coalesce(nullif(o ->> 'client_reference_id', ''), nullif(o -> 'metadata' ->> 'organization_id', '')),
            o ->> 'customer', o ->> 'subscription',
            coalesce(o -> 'customer_details' ->> 'email', o ->> 'customer_email')
     FROM (SELECT $1::jsonb -> 'data' -> 'object' AS o) x",
    &[types::JSONB],
);

static NOTE_SUBSCRIPTION_ID: Statement = Statement::write(
    "UPDATE org_subscriptions SET provider = 'stripe', provider_customer_id = $2, provider_subscription_id = $3
     WHERE organization_id = $1 AND $3 IS NOT NULL
       AND provider_subscription_id IS DISTINCT FROM $3",
    &[types::UUID, types::TEXT, types::TEXT],
);

/// A completed Checkout Session names the organization (client_reference_id or metadata) and
/// its new customer and subscription; the subscription's own events carry its state.
fn apply_checkout(client: &mut SpiClient<'_>, event: RawJsonb) -> (Outcome, Option<Uuid>) {
    let what = "reading the checkout session";
    let [named, customer, subscription, email] = texts(client, &CHECKOUT_IDS, event, what);
    let Some(org) = organization_of(
        client,
        Provider::Stripe,
        named.as_deref(),
        customer.as_deref(),
        subscription.as_deref(),
    ) else {
        return (Outcome::Unmapped, None);
    };
    if let Some(customer) = customer.as_deref() {
        link_customer(client, org, Provider::Stripe, customer, email.as_deref());
        billing::start_free_subscription(client, org);
        spi::run(
            client,
            &NOTE_SUBSCRIPTION_ID,
            &[org.into(), customer.into(), subscription.as_deref().into()],
            what,
        );
    }
    (Outcome::Applied, Some(org))
}

static CUSTOMER_IDS: Statement = Statement::read(
    "SELECT o ->> 'id', nullif(o -> 'metadata' ->> 'organization_id', ''), o ->> 'email',
            o -> 'invoice_settings' ->> 'default_payment_method'
     FROM (SELECT $1::jsonb -> 'data' -> 'object' AS o) x",
    &[types::JSONB],
);

static CUSTOMER_STALE: Statement = Statement::write(
    "SELECT coalesce(provider_synced_at > $2, false) FROM billing_customers
     WHERE organization_id = $1 FOR UPDATE",
    &[types::UUID, types::TIMESTAMPTZ],
);

static CUSTOMER_SYNCED: Statement = Statement::write(
    "UPDATE billing_customers SET billing_email = $2, provider_synced_at = $3, default_payment_method_id = $4
     WHERE organization_id = $1",
    &[types::UUID, types::TEXT, types::TIMESTAMPTZ, types::TEXT],
);

fn customer_ids(client: &SpiClient<'_>, event: RawJsonb) -> [Option<String>; 4] {
    texts(client, &CUSTOMER_IDS, event, "reading the customer")
}

/// A Stripe customer created or changed: the organization's customer row and billing email.
fn apply_customer(
    client: &mut SpiClient<'_>,
    envelope: &Envelope,
    event: RawJsonb,
) -> (Outcome, Option<Uuid>) {
    let [customer, named, email, default_method] = customer_ids(client, event);
    let Some(customer) = customer else {
        errors::invalid_parameter("the customer has no id")
    };
    let Some(org) = organization_of(
        client,
        Provider::Stripe,
        named.as_deref(),
        Some(&customer),
        None,
    ) else {
        return (Outcome::Unmapped, None);
    };
    link_customer(client, org, Provider::Stripe, &customer, email.as_deref());
    let stale = spi::one_mut::<bool>(
        client,
        &CUSTOMER_STALE,
        &[org.into(), envelope.occurred_at.into()],
        "reading the customer",
    )
    .unwrap_or(false);
    if stale {
        return (Outcome::Stale, Some(org));
    }
    spi::run(
        client,
        &CUSTOMER_SYNCED,
        &[
            org.into(),
            email.as_deref().into(),
            envelope.occurred_at.into(),
            default_method.as_deref().into(),
        ],
        "applying the customer",
    );
    billing_ledger::follow_default_payment_method(client, org);
    (Outcome::Applied, Some(org))
}

static FORGET_CUSTOMER: Statement = Statement::write(
    "DELETE FROM billing_customers WHERE provider = 'stripe' AND provider_customer_id = $1
     RETURNING organization_id",
    &[types::TEXT],
);

/// A deleted Stripe customer no longer stands for its organization.
fn apply_customer_deleted(client: &mut SpiClient<'_>, event: RawJsonb) -> (Outcome, Option<Uuid>) {
    let [customer, _, _, _] = customer_ids(client, event);
    let Some(customer) = customer else {
        errors::invalid_parameter("the customer has no id")
    };
    match spi::one_mut::<Uuid>(
        client,
        &FORGET_CUSTOMER,
        &[customer.as_str().into()],
        "forgetting the customer",
    ) {
        Some(org) => (Outcome::Applied, Some(org)),
        None => (Outcome::Unmapped, None),
    }
}

// The seat outbox: at most one pending quantity per organization; a new one supersedes it.
// The subscription row is locked first, so that two callers queueing at once (a request and a
// removal) supersede each other in turn instead of colliding on the one pending row (23505).
static SUPERSEDE_SEATS: Statement = Statement::write(
    "UPDATE pending_seat_updates SET status = 'superseded', resolved_at = now()
     WHERE organization_id = $1 AND status = 'pending'",
    &[types::UUID],
);

static QUEUE_SEATS: Statement = Statement::write(
    "INSERT INTO pending_seat_updates (organization_id, provider, provider_subscription_id, desired_quantity, reason)
     SELECT s.organization_id, s.provider, s.provider_subscription_id, $2, $3
     FROM org_subscriptions s WHERE s.organization_id = $1 AND s.seats <> $2",
    &[types::UUID, types::INT4, types::TEXT],
);

// The provider now has the quantity asked for: done.
static SEATS_ECHOED: Statement = Statement::write(
    "UPDATE pending_seat_updates p SET status = 'done', resolved_at = now()
     FROM org_subscriptions s
     WHERE p.organization_id = $1 AND p.status = 'pending'
       AND s.organization_id = p.organization_id AND s.seats = p.desired_quantity",
    &[types::UUID],
);

fn queue_seats(client: &mut SpiClient<'_>, org: Uuid, quantity: i32, reason: &str) {
    billing::lock_subscription(client, org);
    spi::run(client, &SUPERSEDE_SEATS, &[org.into()], "queueing seats");
    spi::run(
        client,
        &QUEUE_SEATS,
        &[org.into(), quantity.into(), reason.into()],
        "queueing seats",
    );
}

/// After a member left an organization on a paid quantity-based subscription: the seats it
/// pays for should follow the members down (additions are bounded by the seats instead).
pub fn queue_seats_after_removal(client: &mut SpiClient<'_>, org: Uuid, seats: &Seats) {
    if let Some(purchased) = seats.purchased {
        let members = seats.members.max(1);
        if members < purchased {
            queue_seats(client, org, members as i32, "members_removed");
        }
    }
}

static SUBSCRIPTION_SEATS: Statement = Statement::read(
    "SELECT s.billing_type = 'quantity_based' AND plan_in_effect(s.plan, s.status) <> 'free', o.member_count
     FROM organizations o LEFT JOIN org_subscriptions s ON s.organization_id = o.id
     WHERE o.id = $1",
    &[types::UUID],
);

/// Asks for `quantity` seats on the organization's quantity-based subscription, before adding
/// people beyond the seats it pays for: the quantity waits in `pending_seat_updates` for the
/// seat manager. Needs `billing.manage`.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn request_seats(org_id: Option<Uuid>, quantity: Option<i32>) {
    let org = errors::required(org_id, "org_id");
    let quantity = errors::required(quantity, "quantity");
    let action = "request_seats";
    Spi::connect_mut(|client| {
        let access = caller_access(client, org, action);
        access.require("billing.manage", action);
        let what = "reading the subscription";
        let (quantity_based, members) = {
            let table = client
                .select(SUBSCRIPTION_SEATS.prepared(client), Some(1), &[org.into()])
                .or_fail(what);
            let row = table.first();
            (
                row.get::<bool>(1).or_fail(what).unwrap_or(false),
                row.get::<i32>(2).or_fail(what).unwrap_or(0),
            )
        };
        if !quantity_based {
            errors::not_in_prerequisite_state(
                format!("{action}: the organization has no paid quantity-based subscription"),
                "Seats are bought on yearly (quantity_based) subscriptions; others follow the plan's max_seats.",
            );
        }
        if quantity < members.max(1) || quantity > 100_000 {
            errors::invalid_parameter(format!(
                "{action}: quantity must be between the {members} current members and 100000"
            ));
        }
        queue_seats(client, org, quantity, "requested");
    })
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn sqlstates_are_spelled_as_postgresql_does() {
        assert_eq!(
            crate::spi::sqlstate(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE),
            "22023"
        );
        assert_eq!(
            crate::spi::sqlstate(PgSqlErrorCode::ERRCODE_CHECK_VIOLATION),
            "23514"
        );
    }

    #[pg_test]
    fn a_failing_event_leaves_nothing_behind_but_its_log_entry() {
        Spi::run(
            "INSERT INTO auth.users (id, email) VALUES ('00000000-0000-0000-0000-0000000000e9', 'fail@example.com');
             INSERT INTO plan_prices (provider, provider_price_id, plan, billing_interval)
             VALUES ('stripe', 'price_fail', 'pro', 'month')",
        )
        .unwrap();
        let org = Spi::get_one::<pgrx::Uuid>(
            "SELECT id FROM organizations WHERE owner_id = '00000000-0000-0000-0000-0000000000e9'",
        )
        .unwrap()
        .unwrap();
        // A status Stripe does not have: the subscription update breaks its CHECK.
        let outcome = Spi::get_one::<String>(&format!(
            "SELECT apply_billing_event('stripe', jsonb_build_object(
                 'id', 'evt_fail', 'type', 'customer.subscription.updated', 'created', 1767225600,
                 'data', jsonb_build_object('object', jsonb_build_object(
                     'id', 'sub_fail', 'customer', 'cus_fail', 'status', 'bogus',
                     'metadata', jsonb_build_object('organization_id', '{org}'),
                     'items', jsonb_build_object('data', jsonb_build_array(jsonb_build_object(
                         'price', jsonb_build_object('id', 'price_fail'), 'quantity', 1)))))))
             ->> 'outcome'"
        ))
        .unwrap();
        assert_eq!(outcome.as_deref(), Some("failed"));
        let left = Spi::get_one::<String>(&format!(
            "SELECT (SELECT plan || '/' || status FROM org_subscriptions WHERE organization_id = '{org}')
                    || '/' || (SELECT count(*) FROM billing_customers WHERE organization_id = '{org}')
                    || '/' || (SELECT left(error, 5) FROM billing_events WHERE event_key = 'evt_fail')"
        ))
        .unwrap();
        assert_eq!(left.as_deref(), Some("free/active/0/23514"));
    }
}
