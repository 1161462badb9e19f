//! The billing ledger (sql/billing_ledger.sql): invoices and their line items, payment methods
//! and payment transactions, written by `apply_billing_event` from the provider's events.
//!
//! Each row keeps the provider time of the newest event applied to it (`provider_synced_at`);
//! an upsert changes the row only when its event is newer, or as new and no further back in the
//! row's progression (an invoice never goes from paid back to open, a payment from refunded
//! back to succeeded, on events of the same second). The upserts lock the row they change, so
//! events about one object delivered at once apply in turn. As in billing_events.rs, payloads
//! are read with PostgreSQL's jsonb operators inside the statements.
use pgrx::spi::SpiClient;
use pgrx::Uuid;

use crate::billing;
use crate::billing_events::{organization_of, texts, Envelope, Outcome, Provider};
use crate::jsonb::RawJsonb;
use crate::spi::{self, types, Statement};

pgrx::extension_sql_file!(
    "../sql/billing_ledger.sql",
    name = "billing_ledger",
    requires = ["billing", "roles", "backup"]
);

/// A payment's state as a payment_intent event names it (charges carry theirs).
#[derive(Clone, Copy)]
pub(crate) enum PaymentStatus {
    Pending,
    Succeeded,
    Failed,
}

impl PaymentStatus {
    fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Failed => "failed",
        }
    }
}

/// The organization an event's object belongs to; `statement` reads from the event the
/// organization its metadata names, the customer id and the subscription id, in that order.
fn organization_for(
    client: &SpiClient<'_>,
    provider: Provider,
    statement: &'static Statement,
    event: RawJsonb,
) -> Option<Uuid> {
    let [named, customer, subscription] =
        texts(client, statement, event, "finding the organization");
    organization_of(
        client,
        provider,
        named.as_deref(),
        customer.as_deref(),
        subscription.as_deref(),
    )
}

// A Stripe object's metadata and customer (payment methods, charges, payment intents).
static STRIPE_OBJECT_IDS: Statement = Statement::read(
    "SELECT nullif(o -> 'metadata' ->> 'organization_id', ''), o ->> 'customer', NULL::text
     FROM (SELECT $1::jsonb -> 'data' -> 'object' AS o) x",
    &[types::JSONB],
);

/// The outcome of an upsert that returns the row's id when it applied.
fn applied_or_stale(id: Option<Uuid>, org: Uuid) -> (Outcome, Option<Uuid>) {
    match id {
        Some(_) => (Outcome::Applied, Some(org)),
        None => (Outcome::Stale, Some(org)),
    }
}

// ------------------------------------------------------------------ invoices

static STRIPE_INVOICE_IDS: Statement = Statement::read(
    "SELECT coalesce(nullif(o -> 'metadata' ->> 'organization_id', ''),
                     nullif(o -> 'parent' -> 'subscription_details' -> 'metadata' ->> 'organization_id', ''),
                     nullif(o -> 'subscription_details' -> 'metadata' ->> 'organization_id', '')),
            o ->> 'customer', coalesce(o ->> 'subscription', o -> 'parent' -> 'subscription_details' ->> 'subscription')
     FROM (SELECT $1::jsonb -> 'data' -> 'object' AS o) x",
    &[types::JSONB],
);

// Both API shapes: the subscription on the invoice (older) or under parent (newer); tax as a
// field (older) or as total - total_excluding_tax.
static UPSERT_STRIPE_INVOICE: Statement = Statement::write(
    "INSERT INTO invoices AS i (organization_id, provider, provider_invoice_id, provider_subscription_id, number,
                                status, billing_reason, currency, subtotal, tax, total, amount_due, amount_paid,
                                amount_remaining, period_start, period_end, due_at, paid_at, hosted_invoice_url,
                                invoice_pdf_url, provider_created_at, provider_synced_at)
     SELECT $1, 'stripe', o ->> 'id',
            coalesce(o ->> 'subscription', o -> 'parent' -> 'subscription_details' ->> 'subscription'),
            o ->> 'number', o ->> 'status', o ->> 'billing_reason', lower(o ->> 'currency'),
            (o ->> 'subtotal')::bigint,
            coalesce((o ->> 'tax')::bigint, (o ->> 'total')::bigint - (o ->> 'total_excluding_tax')::bigint),
            (o ->> 'total')::bigint, (o ->> 'amount_due')::bigint, (o ->> 'amount_paid')::bigint,
            (o ->> 'amount_remaining')::bigint,
            to_timestamp((o ->> 'period_start')::float8), to_timestamp((o ->> 'period_end')::float8),
            to_timestamp((o ->> 'due_date')::float8), to_timestamp((o -> 'status_transitions' ->> 'paid_at')::float8),
            o ->> 'hosted_invoice_url', o ->> 'invoice_pdf', to_timestamp((o ->> 'created')::float8), $2
     FROM (SELECT $3::jsonb -> 'data' -> 'object' AS o) x
     ON CONFLICT (provider, provider_invoice_id) DO UPDATE SET
         provider_subscription_id = excluded.provider_subscription_id, number = excluded.number,
         status = excluded.status, billing_reason = excluded.billing_reason, currency = excluded.currency,
         subtotal = excluded.subtotal, tax = excluded.tax, total = excluded.total,
         amount_due = excluded.amount_due, amount_paid = excluded.amount_paid,
         amount_remaining = excluded.amount_remaining, period_start = excluded.period_start,
         period_end = excluded.period_end, due_at = excluded.due_at, paid_at = excluded.paid_at,
         hosted_invoice_url = excluded.hosted_invoice_url, invoice_pdf_url = excluded.invoice_pdf_url,
         provider_created_at = excluded.provider_created_at, provider_synced_at = excluded.provider_synced_at
     WHERE i.provider_synced_at IS NULL OR i.provider_synced_at < excluded.provider_synced_at
        OR (i.provider_synced_at = excluded.provider_synced_at
            AND CASE excluded.status WHEN 'draft' THEN 0 WHEN 'open' THEN 1 ELSE 2 END
                >= CASE i.status WHEN 'draft' THEN 0 WHEN 'open' THEN 1 ELSE 2 END)
     RETURNING id",
    &[types::UUID, types::TIMESTAMPTZ, types::JSONB],
);

static CLEAR_LINES: Statement = Statement::write(
    "DELETE FROM invoice_line_items WHERE invoice_id = $1",
    &[types::UUID],
);

// The lines the event carries (Stripe sends the first page). Proration and price in both API
// shapes: on the line (older) or under parent / pricing (newer).
static INSERT_STRIPE_LINES: Statement = Statement::write(
    "INSERT INTO invoice_line_items (invoice_id, organization_id, provider_line_item_id, description, amount, currency,
                                     quantity, proration, period_start, period_end, provider_price_id, plan)
     SELECT $1, $2, l ->> 'id', l ->> 'description', (l ->> 'amount')::bigint, lower(l ->> 'currency'),
            (l ->> 'quantity')::int,
            coalesce((l ->> 'proration')::boolean,
                     (l -> 'parent' -> 'subscription_item_details' ->> 'proration')::boolean,
                     (l -> 'parent' -> 'invoice_item_details' ->> 'proration')::boolean, false),
            to_timestamp((l -> 'period' ->> 'start')::float8), to_timestamp((l -> 'period' ->> 'end')::float8),
            p.price,
            (SELECT pp.plan FROM plan_prices pp WHERE pp.provider = 'stripe' AND pp.provider_price_id = p.price)
     FROM jsonb_array_elements(CASE jsonb_typeof($3::jsonb -> 'data' -> 'object' -> 'lines' -> 'data')
                               WHEN 'array' THEN $3::jsonb -> 'data' -> 'object' -> 'lines' -> 'data'
                               ELSE '[]' END) l,
          LATERAL (SELECT coalesce(l -> 'price' ->> 'id', l -> 'pricing' -> 'price_details' ->> 'price',
                                   l -> 'plan' ->> 'id') AS price) p",
    &[types::UUID, types::UUID, types::JSONB],
);

/// A Stripe invoice created, finalized, paid, failed, voided or marked uncollectible: the
/// invoice and its lines as the event shows them.
pub(crate) fn apply_stripe_invoice(
    client: &mut SpiClient<'_>,
    envelope: &Envelope,
    event: RawJsonb,
) -> (Outcome, Option<Uuid>) {
    let what = "applying the invoice";
    let Some(org) = organization_for(client, Provider::Stripe, &STRIPE_INVOICE_IDS, event) else {
        return (Outcome::Unmapped, None);
    };
    let id = spi::one_mut::<Uuid>(
        client,
        &UPSERT_STRIPE_INVOICE,
        &[org.into(), envelope.occurred_at.into(), event.into()],
        what,
    );
    if let Some(id) = id {
        spi::run(client, &CLEAR_LINES, &[id.into()], what);
        spi::run(
            client,
            &INSERT_STRIPE_LINES,
            &[id.into(), org.into(), event.into()],
            what,
        );
    }
    applied_or_stale(id, org)
}

// ------------------------------------------------------------------ payment methods

static UPSERT_STRIPE_PAYMENT_METHOD: Statement = Statement::write(
    "INSERT INTO payment_methods AS m (organization_id, provider, provider_payment_method_id, type, brand, last4,
                                       exp_month, exp_year, provider_synced_at)
     SELECT $1, 'stripe', o ->> 'id', coalesce(o ->> 'type', 'card'),
            coalesce(o -> 'card' ->> 'display_brand', o -> 'card' ->> 'brand', o -> 'sepa_debit' ->> 'bank_code'),
            coalesce(o -> 'card' ->> 'last4', o -> 'sepa_debit' ->> 'last4', o -> 'us_bank_account' ->> 'last4'),
            (o -> 'card' ->> 'exp_month')::int, (o -> 'card' ->> 'exp_year')::int, $2
     FROM (SELECT $3::jsonb -> 'data' -> 'object' AS o) x
     ON CONFLICT (provider, provider_payment_method_id) DO UPDATE SET
         type = excluded.type, brand = excluded.brand, last4 = excluded.last4, exp_month = excluded.exp_month,
         exp_year = excluded.exp_year, provider_synced_at = excluded.provider_synced_at
     WHERE m.organization_id = excluded.organization_id
       AND (m.provider_synced_at IS NULL OR m.provider_synced_at <= excluded.provider_synced_at)
     RETURNING id",
    &[types::UUID, types::TIMESTAMPTZ, types::JSONB],
);

// The customer's default at the provider, once both the customer event naming it and the
// method itself have arrived (in either order).
static FOLLOW_DEFAULT: Statement = Statement::write(
    "UPDATE payment_methods m SET is_default = (m.provider_payment_method_id = c.default_payment_method_id)
     FROM billing_customers c
     WHERE c.organization_id = $1 AND m.organization_id = $1 AND m.provider = c.provider
       AND m.is_default IS DISTINCT FROM (m.provider_payment_method_id = c.default_payment_method_id)
       AND EXISTS (SELECT 1 FROM payment_methods d
                   WHERE d.organization_id = $1 AND d.provider = c.provider
                     AND d.provider_payment_method_id = c.default_payment_method_id)",
    &[types::UUID],
);

/// Marks the customer's default payment method (billing_customers.default_payment_method_id)
/// as the organization's default, when it is known.
pub(crate) fn follow_default_payment_method(client: &mut SpiClient<'_>, org: Uuid) {
    billing::lock_subscription(client, org);
    spi::run(
        client,
        &FOLLOW_DEFAULT,
        &[org.into()],
        "following the default payment method",
    );
}

/// A Stripe payment method attached to a customer or updated (a new expiry, a card updater).
pub(crate) fn apply_stripe_payment_method(
    client: &mut SpiClient<'_>,
    envelope: &Envelope,
    event: RawJsonb,
) -> (Outcome, Option<Uuid>) {
    let what = "applying the payment method";
    let Some(org) = organization_for(client, Provider::Stripe, &STRIPE_OBJECT_IDS, event) else {
        return (Outcome::Unmapped, None);
    };
    // Two methods attached at once to an organization without one: the second waits, then
    // sees the first's default.
    billing::lock_subscription(client, org);
    let id = spi::one_mut::<Uuid>(
        client,
        &UPSERT_STRIPE_PAYMENT_METHOD,
        &[org.into(), envelope.occurred_at.into(), event.into()],
        what,
    );
    if id.is_some() {
        follow_default_payment_method(client, org);
    }
    applied_or_stale(id, org)
}

static DETACH_PAYMENT_METHOD: Statement = Statement::write(
    "DELETE FROM payment_methods
     WHERE provider = 'stripe' AND provider_payment_method_id = ($1::jsonb -> 'data' -> 'object' ->> 'id')
     RETURNING organization_id",
    &[types::JSONB],
);

/// A Stripe payment method detached from its customer: gone (a detached method cannot be
/// attached again). If it was the default, the newest remaining one takes over.
pub(crate) fn apply_stripe_payment_method_detached(
    client: &mut SpiClient<'_>,
    event: RawJsonb,
) -> (Outcome, Option<Uuid>) {
    let org = spi::one_mut::<Uuid>(
        client,
        &DETACH_PAYMENT_METHOD,
        &[event.into()],
        "detaching the payment method",
    );
    // Nothing to remove is nothing to retry either.
    (Outcome::Applied, org)
}

// Lemon Squeezy has no payment method objects: the card on a subscription (card_brand,
// card_last_four) is the organization's default.
static UPSERT_LEMON_SQUEEZY_CARD: Statement = Statement::write(
    "INSERT INTO payment_methods AS m (organization_id, provider, provider_payment_method_id, type, brand, last4,
                                       provider_synced_at)
     SELECT $1, 'lemon_squeezy', 'subscription:' || (e -> 'data' ->> 'id'), 'card',
            e -> 'data' -> 'attributes' ->> 'card_brand', right(e -> 'data' -> 'attributes' ->> 'card_last_four', 4), $2
     FROM (SELECT $3::jsonb AS e) x
     WHERE e -> 'data' -> 'attributes' ->> 'card_brand' IS NOT NULL
     ON CONFLICT (provider, provider_payment_method_id) DO UPDATE SET
         brand = excluded.brand, last4 = excluded.last4, provider_synced_at = excluded.provider_synced_at
     WHERE m.organization_id = excluded.organization_id
       AND (m.provider_synced_at IS NULL OR m.provider_synced_at <= excluded.provider_synced_at)
     RETURNING id",
    &[types::UUID, types::TIMESTAMPTZ, types::JSONB],
);

static MAKE_DEFAULT: Statement = Statement::write(
    "UPDATE payment_methods SET is_default = (id = $2)
     WHERE organization_id = $1 AND is_default IS DISTINCT FROM (id = $2)",
    &[types::UUID, types::UUID],
);

/// The card a Lemon Squeezy subscription event shows, as the organization's default.
pub(crate) fn apply_lemon_squeezy_card(
    client: &mut SpiClient<'_>,
    org: Uuid,
    envelope: &Envelope,
    event: RawJsonb,
) {
    let what = "applying the subscription's card";
    if let Some(id) = spi::one_mut::<Uuid>(
        client,
        &UPSERT_LEMON_SQUEEZY_CARD,
        &[org.into(), envelope.occurred_at.into(), event.into()],
        what,
    ) {
        spi::run(client, &MAKE_DEFAULT, &[org.into(), id.into()], what);
    }
}

// ------------------------------------------------------------------ payments

// Which payment progresses further: on events of the same second a row never goes back.
macro_rules! newer_payment {
    () => {
        "WHERE t.provider_synced_at IS NULL OR t.provider_synced_at < excluded.provider_synced_at
            OR (t.provider_synced_at = excluded.provider_synced_at
                AND array_position(ARRAY['pending', 'failed', 'succeeded', 'partially_refunded', 'refunded'], excluded.status)
                    >= array_position(ARRAY['pending', 'failed', 'succeeded', 'partially_refunded', 'refunded'], t.status))"
    };
}

// A charge: its payment intent's row when it has one (so charge.* and payment_intent.* events
// update one payment), else its own.
static UPSERT_STRIPE_CHARGE: Statement = Statement::write(concat!(
    "INSERT INTO payment_transactions AS t (organization_id, provider, provider_transaction_id, provider_invoice_id,
                                            status, amount, amount_refunded, currency, payment_method_brand,
                                            payment_method_last4, failure_code, failure_message,
                                            provider_created_at, provider_synced_at)
     SELECT $1, 'stripe', coalesce(o ->> 'payment_intent', o ->> 'id'), o ->> 'invoice',
            CASE WHEN refunded > 0 AND refunded >= amount THEN 'refunded'
                 WHEN refunded > 0 THEN 'partially_refunded'
                 WHEN o ->> 'status' = 'succeeded' THEN 'succeeded'
                 WHEN o ->> 'status' = 'failed' THEN 'failed'
                 ELSE 'pending' END,
            amount, refunded, lower(o ->> 'currency'),
            o -> 'payment_method_details' -> 'card' ->> 'brand', o -> 'payment_method_details' -> 'card' ->> 'last4',
            o ->> 'failure_code', o ->> 'failure_message', to_timestamp((o ->> 'created')::float8), $2
     FROM (SELECT o, (o ->> 'amount')::bigint AS amount, coalesce((o ->> 'amount_refunded')::bigint, 0) AS refunded
           FROM (SELECT $3::jsonb -> 'data' -> 'object' AS o) x) c
     ON CONFLICT (provider, provider_transaction_id) DO UPDATE SET
         provider_invoice_id = coalesce(excluded.provider_invoice_id, t.provider_invoice_id),
         status = excluded.status, amount = excluded.amount, amount_refunded = excluded.amount_refunded,
         currency = excluded.currency, payment_method_brand = excluded.payment_method_brand,
         payment_method_last4 = excluded.payment_method_last4, failure_code = excluded.failure_code,
         failure_message = excluded.failure_message, provider_synced_at = excluded.provider_synced_at
     ",
    newer_payment!(),
    " RETURNING id"
), &[types::UUID, types::TIMESTAMPTZ, types::JSONB]);

// A payment intent: status from the event's type; refunds and the card come with its charge.
static UPSERT_STRIPE_PAYMENT_INTENT: Statement = Statement::write(concat!(
    "INSERT INTO payment_transactions AS t (organization_id, provider, provider_transaction_id, provider_invoice_id,
                                            status, amount, currency, failure_code, failure_message,
                                            provider_created_at, provider_synced_at)
     SELECT $1, 'stripe', o ->> 'id', o ->> 'invoice', $4, (o ->> 'amount')::bigint, lower(o ->> 'currency'), o -> 'last_payment_error' ->> 'code', o -> 'last_payment_error' ->> 'message',
            to_timestamp((o ->> 'created')::float8), $2
     FROM (SELECT $3::jsonb -> 'data' -> 'object' AS o) x
     ON CONFLICT (provider, provider_transaction_id) DO UPDATE SET
         provider_invoice_id = coalesce(excluded.provider_invoice_id, t.provider_invoice_id),
         status = CASE WHEN t.status IN ('partially_refunded', 'refunded') AND excluded.status = 'succeeded'
                       THEN t.status ELSE excluded.status END,
         amount = greatest(excluded.amount, t.amount_refunded), currency = excluded.currency,
         failure_code = excluded.failure_code, failure_message = excluded.failure_message,
         provider_synced_at = excluded.provider_synced_at
     ",
    newer_payment!(),
    " RETURNING id"
), &[types::UUID, types::TIMESTAMPTZ, types::JSONB, types::TEXT]);

/// A Stripe charge succeeded, failed, pending or refunded (fully or in part).
pub(crate) fn apply_stripe_charge(
    client: &mut SpiClient<'_>,
    envelope: &Envelope,
    event: RawJsonb,
) -> (Outcome, Option<Uuid>) {
    let Some(org) = organization_for(client, Provider::Stripe, &STRIPE_OBJECT_IDS, event) else {
        return (Outcome::Unmapped, None);
    };
    let id = spi::one_mut::<Uuid>(
        client,
        &UPSERT_STRIPE_CHARGE,
        &[org.into(), envelope.occurred_at.into(), event.into()],
        "applying the charge",
    );
    applied_or_stale(id, org)
}

/// A Stripe payment intent succeeded, failed, was canceled or is processing.
pub(crate) fn apply_stripe_payment_intent(
    client: &mut SpiClient<'_>,
    envelope: &Envelope,
    event: RawJsonb,
    status: PaymentStatus,
) -> (Outcome, Option<Uuid>) {
    let Some(org) = organization_for(client, Provider::Stripe, &STRIPE_OBJECT_IDS, event) else {
        return (Outcome::Unmapped, None);
    };
    let id = spi::one_mut::<Uuid>(
        client,
        &UPSERT_STRIPE_PAYMENT_INTENT,
        &[
            org.into(),
            envelope.occurred_at.into(),
            event.into(),
            status.as_str().into(),
        ],
        "applying the payment intent",
    );
    applied_or_stale(id, org)
}

// ------------------------------------------------------------------ Lemon Squeezy payments

static LEMON_SQUEEZY_PAYMENT_IDS: Statement = Statement::read(
    "SELECT nullif(e -> 'meta' -> 'custom_data' ->> 'organization_id', ''),
            e -> 'data' -> 'attributes' ->> 'customer_id', e -> 'data' -> 'attributes' ->> 'subscription_id'
     FROM (SELECT $1::jsonb AS e) x",
    &[types::JSONB],
);

// A subscription invoice (subscription_payment_*): Lemon Squeezy's statuses pending, paid,
// void, refunded and partial_refund map onto Stripe's (a refunded invoice was paid).
static UPSERT_LEMON_SQUEEZY_INVOICE: Statement = Statement::write(
    "INSERT INTO invoices AS i (organization_id, provider, provider_invoice_id, provider_subscription_id, status,
                                billing_reason, currency, subtotal, tax, total, amount_due, amount_paid,
                                amount_remaining, paid_at, hosted_invoice_url, provider_created_at, provider_synced_at)
     SELECT $1, 'lemon_squeezy', d ->> 'id', a ->> 'subscription_id', status, a ->> 'billing_reason',
            lower(a ->> 'currency'), (a ->> 'subtotal')::bigint, (a ->> 'tax')::bigint, (a ->> 'total')::bigint,
            (a ->> 'total')::bigint, CASE status WHEN 'paid' THEN (a ->> 'total')::bigint ELSE 0 END,
            CASE status WHEN 'open' THEN (a ->> 'total')::bigint ELSE 0 END,
            CASE status WHEN 'paid' THEN (a ->> 'updated_at')::timestamptz END,
            a -> 'urls' ->> 'invoice_url', (a ->> 'created_at')::timestamptz, $2
     FROM (SELECT d, d -> 'attributes' AS a,
                  CASE d -> 'attributes' ->> 'status' WHEN 'pending' THEN 'open' WHEN 'void' THEN 'void'
                       WHEN 'paid' THEN 'paid' WHEN 'refunded' THEN 'paid' WHEN 'partial_refund' THEN 'paid' END AS status
           FROM (SELECT $3::jsonb -> 'data' AS d) x) y
     ON CONFLICT (provider, provider_invoice_id) DO UPDATE SET
         status = excluded.status, billing_reason = excluded.billing_reason, currency = excluded.currency,
         subtotal = excluded.subtotal, tax = excluded.tax, total = excluded.total, amount_due = excluded.amount_due,
         amount_paid = excluded.amount_paid, amount_remaining = excluded.amount_remaining, paid_at = excluded.paid_at,
         hosted_invoice_url = excluded.hosted_invoice_url, provider_synced_at = excluded.provider_synced_at
     WHERE i.provider_synced_at IS NULL OR i.provider_synced_at <= excluded.provider_synced_at
     RETURNING id",
    &[types::UUID, types::TIMESTAMPTZ, types::JSONB],
);

// The payment behind a subscription invoice or an order: status from the object's status
// (refunds) or the event (a failed or recovered subscription payment).
static UPSERT_LEMON_SQUEEZY_PAYMENT: Statement = Statement::write(concat!(
    "INSERT INTO payment_transactions AS t (organization_id, provider, provider_transaction_id, provider_invoice_id,
                                            status, amount, amount_refunded, currency, payment_method_brand,
                                            payment_method_last4, provider_created_at, provider_synced_at)
     SELECT $1, 'lemon_squeezy', $5 || ':' || (d ->> 'id'), CASE $5 WHEN 'subscription_invoice' THEN d ->> 'id' END,
            status, total,
            CASE status WHEN 'refunded' THEN total
                        WHEN 'partially_refunded' THEN least(coalesce((a ->> 'refunded_amount')::bigint, 0), total)
                        ELSE 0 END,
            lower(a ->> 'currency'), a ->> 'card_brand', a ->> 'card_last_four',
            (a ->> 'created_at')::timestamptz, $2
     FROM (SELECT d, a, (a ->> 'total')::bigint AS total,
                  CASE WHEN a ->> 'status' = 'refunded' THEN 'refunded'
                       WHEN a ->> 'status' = 'partial_refund' THEN 'partially_refunded'
                       WHEN a ->> 'status' = 'fraudulent' THEN 'failed'
                       ELSE coalesce($4, CASE a ->> 'status' WHEN 'paid' THEN 'succeeded' WHEN 'failed' THEN 'failed'
                                                              ELSE 'pending' END) END AS status
           FROM (SELECT $3::jsonb -> 'data' AS d, $3::jsonb -> 'data' -> 'attributes' AS a) x) y
     ON CONFLICT (provider, provider_transaction_id) DO UPDATE SET
         status = excluded.status, amount = excluded.amount, amount_refunded = excluded.amount_refunded,
         currency = excluded.currency, payment_method_brand = excluded.payment_method_brand,
         payment_method_last4 = excluded.payment_method_last4, provider_synced_at = excluded.provider_synced_at
     ",
    newer_payment!(),
    " RETURNING id"
), &[types::UUID, types::TIMESTAMPTZ, types::JSONB, types::TEXT, types::TEXT]);

/// What a Lemon Squeezy payment belongs to; its row is keyed "<kind>:<id>".
#[derive(Clone, Copy)]
enum LemonSqueezyPayment {
    SubscriptionInvoice,
    Order,
}

impl LemonSqueezyPayment {
    fn as_str(self) -> &'static str {
        match self {
            LemonSqueezyPayment::SubscriptionInvoice => "subscription_invoice",
            LemonSqueezyPayment::Order => "order",
        }
    }
}

fn lemon_squeezy_payment(
    client: &mut SpiClient<'_>,
    org: Uuid,
    envelope: &Envelope,
    event: RawJsonb,
    status: Option<PaymentStatus>,
    kind: LemonSqueezyPayment,
) -> Option<Uuid> {
    spi::one_mut::<Uuid>(
        client,
        &UPSERT_LEMON_SQUEEZY_PAYMENT,
        &[
            org.into(),
            envelope.occurred_at.into(),
            event.into(),
            status.map(PaymentStatus::as_str).into(),
            kind.as_str().into(),
        ],
        "applying the payment",
    )
}

/// A Lemon Squeezy subscription payment succeeded, failed, recovered or was refunded: its
/// subscription invoice and its payment.
pub(crate) fn apply_lemon_squeezy_subscription_payment(
    client: &mut SpiClient<'_>,
    envelope: &Envelope,
    event: RawJsonb,
) -> (Outcome, Option<Uuid>) {
    let Some(org) = organization_for(
        client,
        Provider::LemonSqueezy,
        &LEMON_SQUEEZY_PAYMENT_IDS,
        event,
    ) else {
        return (Outcome::Unmapped, None);
    };
    let status = match envelope.event_type.as_str() {
        "subscription_payment_failed" => Some(PaymentStatus::Failed),
        "subscription_payment_success" | "subscription_payment_recovered" => {
            Some(PaymentStatus::Succeeded)
        }
        _ => None,
    };
    let invoice = spi::one_mut::<Uuid>(
        client,
        &UPSERT_LEMON_SQUEEZY_INVOICE,
        &[org.into(), envelope.occurred_at.into(), event.into()],
        "applying the subscription invoice",
    );
    let payment = lemon_squeezy_payment(
        client,
        org,
        envelope,
        event,
        status,
        LemonSqueezyPayment::SubscriptionInvoice,
    );
    applied_or_stale(invoice.or(payment), org)
}

/// A Lemon Squeezy order created (paid, pending, failed) or refunded.
pub(crate) fn apply_lemon_squeezy_order(
    client: &mut SpiClient<'_>,
    envelope: &Envelope,
    event: RawJsonb,
) -> (Outcome, Option<Uuid>) {
    let Some(org) = organization_for(
        client,
        Provider::LemonSqueezy,
        &LEMON_SQUEEZY_PAYMENT_IDS,
        event,
    ) else {
        return (Outcome::Unmapped, None);
    };
    let payment = lemon_squeezy_payment(
        client,
        org,
        envelope,
        event,
        None,
        LemonSqueezyPayment::Order,
    );
    applied_or_stale(payment, org)
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn an_organization_with_payment_methods_keeps_exactly_one_default() {
        Spi::run(
            "INSERT INTO auth.users (id, email) VALUES ('00000000-0000-0000-0000-0000000000d1', 'pm@example.com');
             INSERT INTO payment_methods (organization_id, provider, provider_payment_method_id, provider_synced_at)
             SELECT o.id, 'stripe', m.pm, m.at FROM organizations o,
                    (VALUES ('pm_a', timestamptz '2026-01-01'), ('pm_b', '2026-01-02'), ('pm_c', '2026-01-03')) m (pm, at)
             WHERE o.owner_id = '00000000-0000-0000-0000-0000000000d1'",
        )
        .unwrap();
        let defaults = || {
            Spi::get_one::<String>(
                "SELECT string_agg(provider_payment_method_id, ',') FROM payment_methods WHERE is_default",
            )
            .unwrap()
        };
        // None was marked default: the one the provider reported last became it.
        assert_eq!(defaults().as_deref(), Some("pm_c"));
        // One statement moves the default (the constraint is checked at its end).
        Spi::run("UPDATE payment_methods SET is_default = (provider_payment_method_id = 'pm_b')")
            .unwrap();
        assert_eq!(defaults().as_deref(), Some("pm_b"));
        let refused =
            crate::testing::error_of("UPDATE payment_methods SET is_default = true WHERE provider_payment_method_id = 'pm_a'")
                .unwrap_or_default();
        assert!(refused.contains("payment_methods_one_default"), "{refused}");
        // The default removed: the one the provider reported last takes over.
        Spi::run("DELETE FROM payment_methods WHERE provider_payment_method_id = 'pm_b'").unwrap();
        assert_eq!(defaults().as_deref(), Some("pm_c"));
    }
}
