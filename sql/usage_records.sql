-- Usage records (seed 002 §4, seed 004 §1; src/usage_records.rs): what a usage_based
-- subscription reports to its provider for a billing period, produced from saas_core's
-- rollups by prepare_usage_records(), which the application's billing job calls after a
-- month closes. One row per organization, event type and month; preparing a month again
-- refreshes what is still pending and never touches what was reported.

CREATE TABLE @extschema@.usage_records (
    id                        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id           uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    event_type                text NOT NULL,
    -- A UTC calendar month, the bucket check_feature_access counts against: [period_start, period_end).
    period_start              timestamptz NOT NULL,
    period_end                timestamptz NOT NULL,
    quantity                  numeric NOT NULL CONSTRAINT usage_records_quantity_check CHECK (quantity >= 0),
    provider                  text CONSTRAINT usage_records_provider_check CHECK (provider IN ('stripe', 'lemon_squeezy')),
    provider_subscription_id  text,
    -- pending: waiting for the billing job; reported: the provider has it (its record id kept).
    status                    text NOT NULL DEFAULT 'pending' CONSTRAINT usage_records_status_check
                              CHECK (status IN ('pending', 'reported')),
    reported_at               timestamptz,
    provider_record_id        text,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT usage_records_period_key UNIQUE (organization_id, event_type, period_start),
    CONSTRAINT usage_records_period_check CHECK (period_end > period_start),
    CONSTRAINT usage_records_reported_check CHECK ((status = 'reported') = (reported_at IS NOT NULL))
);
COMMENT ON TABLE @extschema@.usage_records IS
    'Usage a usage_based subscription reports to its provider, per organization, event type and month.';
CREATE INDEX usage_records_pending_idx ON @extschema@.usage_records (period_start) WHERE status = 'pending';

CREATE TRIGGER update_usage_records_updated_at
    BEFORE UPDATE ON @extschema@.usage_records
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();

SELECT pg_catalog.pg_extension_config_dump('@extschema@.usage_records', '');

REVOKE ALL ON @extschema@.usage_records FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON @extschema@.usage_records TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.usage_records TO service_role;
ALTER TABLE @extschema@.usage_records ENABLE ROW LEVEL SECURITY;
CREATE POLICY usage_records_select_billing ON @extschema@.usage_records
    FOR SELECT TO authenticated
    USING (organization_id = ANY (ARRAY(SELECT @extschema@.current_user_permitted_org_ids('billing.read'))));
CREATE POLICY usage_records_service_role_all ON @extschema@.usage_records
    FOR ALL TO service_role USING (true) WITH CHECK (true);

REVOKE ALL ON FUNCTION @extschema@.prepare_usage_records(timestamptz) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.prepare_usage_records(timestamptz) TO service_role;
REVOKE ALL ON FUNCTION @extschema@.mark_usage_record_reported(uuid, text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.mark_usage_record_reported(uuid, text) TO service_role;
