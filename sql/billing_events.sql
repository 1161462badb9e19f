-- Payment provider webhooks and the seat outbox (src/billing_events.rs): apply_billing_event() takes a Stripe Event
-- or a Lemon Squeezy webhook body as the provider sends it, applies it once, in order, and logs
-- it here with its outcome. Signature verification stays in the application: it needs the raw
-- body and the endpoint's secret.

CREATE TABLE @extschema@.billing_events (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider         text NOT NULL CONSTRAINT billing_events_provider_check CHECK (provider IN ('stripe', 'lemon_squeezy')),
    -- Stripe's event id; for Lemon Squeezy (no event id) its event name, object and update time.
    event_key        text NOT NULL,
    event_type       text NOT NULL,
    -- The provider's id of the object the event is about (sub_…, cus_…, cs_…, a subscription id).
    object_id        text,
    -- No foreign key: the log outlives the organization.
    organization_id  uuid,
    -- The provider's time of the event (Stripe: created; Lemon Squeezy: the object's updated_at).
    occurred_at      timestamptz,
    received_at      timestamptz NOT NULL DEFAULT now(),
    -- How many deliveries were applied (failed and unmapped events are tried again).
    attempts         integer NOT NULL DEFAULT 1,
    -- applied; stale (older than what was applied to its object); unknown_type (logged, ignored);
    -- unmapped (no organization found: tried again on redelivery); failed (the error is kept;
    -- tried again on redelivery).
    outcome          text NOT NULL CONSTRAINT billing_events_outcome_check
                     CHECK (outcome IN ('applied', 'stale', 'unknown_type', 'unmapped', 'failed')),
    error            text,
    payload          jsonb NOT NULL,
    CONSTRAINT billing_events_key UNIQUE (provider, event_key)
);
COMMENT ON TABLE @extschema@.billing_events IS
    'Every provider webhook event apply_billing_event() received, with its outcome, for support.';
CREATE INDEX billing_events_organization_idx ON @extschema@.billing_events (organization_id, received_at DESC);
CREATE INDEX billing_events_object_idx ON @extschema@.billing_events (provider, object_id, occurred_at DESC);

SELECT pg_catalog.pg_extension_config_dump('@extschema@.billing_events', '');

REVOKE ALL ON @extschema@.billing_events FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON @extschema@.billing_events TO service_role;
ALTER TABLE @extschema@.billing_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY billing_events_service_role_read ON @extschema@.billing_events
    FOR SELECT TO service_role USING (true);

REVOKE ALL ON FUNCTION @extschema@.apply_billing_event(text, jsonb) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.apply_billing_event(text, jsonb) TO service_role;

-- Seats of quantity-based subscriptions (seed 003): the seats the subscription pays for bound
-- membership; the quantity the provider should have waits here for the application's seat
-- manager, which pushes it (with immediate proration). request_seats() asks for more before
-- people are added; a removal asks for fewer. The provider's subscription event echoing the
-- quantity marks it done.
CREATE TABLE @extschema@.pending_seat_updates (
    id                        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id           uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    provider                  text,
    provider_subscription_id  text,
    desired_quantity          integer NOT NULL CONSTRAINT pending_seat_updates_quantity_check CHECK (desired_quantity >= 1),
    reason                    text NOT NULL CONSTRAINT pending_seat_updates_reason_check
                              CHECK (reason IN ('requested', 'members_removed')),
    status                    text NOT NULL DEFAULT 'pending' CONSTRAINT pending_seat_updates_status_check
                              CHECK (status IN ('pending', 'done', 'superseded')),
    requested_at              timestamptz NOT NULL DEFAULT now(),
    resolved_at               timestamptz,
    CONSTRAINT pending_seat_updates_resolved_check CHECK ((status = 'pending') = (resolved_at IS NULL))
);
COMMENT ON TABLE @extschema@.pending_seat_updates IS
    'The seat quantity to push to the provider for a quantity-based subscription: one pending row per organization at most.';
CREATE UNIQUE INDEX pending_seat_updates_one_pending ON @extschema@.pending_seat_updates (organization_id)
    WHERE status = 'pending';
CREATE INDEX pending_seat_updates_status_idx ON @extschema@.pending_seat_updates (status, requested_at)
    WHERE status = 'pending';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.pending_seat_updates', '');

REVOKE ALL ON @extschema@.pending_seat_updates FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON @extschema@.pending_seat_updates TO authenticated;
GRANT SELECT, UPDATE ON @extschema@.pending_seat_updates TO service_role;
ALTER TABLE @extschema@.pending_seat_updates ENABLE ROW LEVEL SECURITY;
CREATE POLICY pending_seat_updates_select_billing ON @extschema@.pending_seat_updates
    FOR SELECT TO authenticated
    USING (organization_id = ANY (ARRAY(SELECT @extschema@.current_user_permitted_org_ids('billing.read'))));
CREATE POLICY pending_seat_updates_service_role_all ON @extschema@.pending_seat_updates
    FOR ALL TO service_role USING (true) WITH CHECK (true);

REVOKE ALL ON FUNCTION @extschema@.request_seats(uuid, integer) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.request_seats(uuid, integer) TO authenticated, service_role;
