-- Recording usage (src/recording.rs): record_usage / record_usage_batch, and the triggers that
-- give direct INSERTs into usage_events the same rules.

-- One key per organization. Kept (with the first call's answer) for
-- usage_settings.idempotency_key_retention, longer than the late-event window and independent
-- of the raw events' retention, so that dropping old events never reopens a duplicate.
CREATE TABLE @extschema@.usage_idempotency_keys (
    organization_id  uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    idempotency_key  text NOT NULL CONSTRAINT usage_idempotency_keys_key_check CHECK (char_length(idempotency_key) BETWEEN 1 AND 255),
    event_id         uuid NOT NULL,
    response         jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT usage_idempotency_keys_pkey PRIMARY KEY (organization_id, idempotency_key)
);
CREATE INDEX usage_idempotency_keys_created_at_brin ON @extschema@.usage_idempotency_keys USING brin (created_at);

COMMENT ON TABLE @extschema@.usage_idempotency_keys IS
    'Idempotency keys of recorded usage, per organization, with the first call''s answer.';

-- Callers recording against a hard, finite limit of an organization take turns on its row
-- (an UPDATE: under REPEATABLE READ the second caller fails with 40001 rather than passing).
CREATE TABLE @extschema@.usage_meter_locks (
    organization_id  uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    event_type       text NOT NULL,
    turns            bigint NOT NULL DEFAULT 0,
    CONSTRAINT usage_meter_locks_pkey PRIMARY KEY (organization_id, event_type)
);

-- Leases on what is left of a hard limit, one row per writing backend (src/quota.rs): a
-- writer records within its lease touching only its own row; the meter's turn-holder grants
-- and reclaims. usage + unused leases <= limit holds at every commit.
CREATE TABLE @extschema@.usage_meter_leases (
    organization_id  uuid NOT NULL REFERENCES @extschema@.organizations (id) ON DELETE CASCADE,
    feature_key      text NOT NULL,
    writer           integer NOT NULL,
    -- The limit's window (this month, or -infinity for all time) and value when granted: a
    -- lease of another window or limit is worth nothing.
    window_start     timestamptz NOT NULL,
    limit_value      bigint NOT NULL,
    granted          numeric NOT NULL,
    used             numeric NOT NULL,
    CONSTRAINT usage_meter_leases_pkey PRIMARY KEY (organization_id, feature_key, writer),
    CONSTRAINT usage_meter_leases_used_check CHECK (used <= granted)
);

-- Only the service role dates an event (members cannot set occurred_at), and only within the
-- late-event window, never in the future. admit_usage_event (src/recording.rs) asks it of
-- dated inserts.
CREATE FUNCTION @extschema@.check_usage_event_time(occurred_at timestamptz, received_at timestamptz)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    window_ interval;
BEGIN
    SELECT s.late_event_window INTO window_ FROM @extschema@.usage_settings s;
    IF occurred_at < received_at - window_ THEN
        RAISE EXCEPTION 'usage_events.occurred_at % is older than the late-event window (%)', occurred_at, window_
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'usage_settings.late_event_window sets how far back events may be dated.';
    END IF;
    IF occurred_at > received_at + interval '5 minutes' THEN
        RAISE EXCEPTION 'usage_events.occurred_at % is in the future', occurred_at
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- A direct INSERT carrying an idempotency key already used in its organization is skipped
-- (INSERT 0 0), as record_usage would answer "duplicate": admit_usage_event claims the key
-- for the row's event id here, and skips the row when this answers false. (record_usage
-- claims its key itself, first, for the event it then writes.)
CREATE FUNCTION @extschema@.claim_usage_event_key(organization uuid, idempotency text, event uuid)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    INSERT INTO @extschema@.usage_idempotency_keys (organization_id, idempotency_key, event_id)
    VALUES (organization, idempotency, event)
    ON CONFLICT DO NOTHING;
    RETURN FOUND OR EXISTS (SELECT 1 FROM @extschema@.usage_idempotency_keys k
                            WHERE k.organization_id = organization
                              AND k.idempotency_key = idempotency AND k.event_id = event);
END
$$;

-- The rules of a direct INSERT (src/recording.rs, admit_usage_event): dated events, repeated
-- keys, and members' limits (past a soft limit the row is stored as overage). Trusted writers
-- (the service role, the owner, record_usage itself) skip the limits: their inserts stay
-- plain inserts. No WHEN clauses: PostgreSQL parses them anew for every statement.
CREATE TRIGGER admit_usage_event
    BEFORE INSERT ON @extschema@.usage_events
    FOR EACH ROW EXECUTE FUNCTION @extschema@.admit_usage_event();
CREATE TRIGGER start_member_usage_tally
    BEFORE INSERT ON @extschema@.usage_events
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.start_member_usage_tally();

REVOKE ALL ON @extschema@.usage_idempotency_keys, @extschema@.usage_meter_locks, @extschema@.usage_meter_leases
    FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT, DELETE ON @extschema@.usage_idempotency_keys TO service_role;
ALTER TABLE @extschema@.usage_idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.usage_meter_locks ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.usage_meter_leases ENABLE ROW LEVEL SECURITY;
CREATE POLICY usage_idempotency_keys_service_role ON @extschema@.usage_idempotency_keys
    FOR ALL TO service_role USING (true) WITH CHECK (true);

SELECT pg_catalog.pg_extension_config_dump('@extschema@.usage_idempotency_keys', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.usage_meter_locks', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.usage_meter_leases', '');

REVOKE ALL ON FUNCTION @extschema@.check_usage_event_time(timestamptz, timestamptz) FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.claim_usage_event_key(uuid, text, uuid) FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.admit_usage_event() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.start_member_usage_tally() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.record_usage(uuid, text, numeric, text, timestamptz, jsonb, uuid)
    FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.record_usage(uuid, text, numeric, text, timestamptz, jsonb, uuid)
    TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.record_usage_batch(jsonb) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.record_usage_batch(jsonb) TO authenticated, service_role;
