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
-- late-event window, never in the future. The WHEN clause keeps it off undated inserts.
CREATE FUNCTION @extschema@.check_usage_event_time()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    window_ interval;
BEGIN
    IF @extschema@.restore_in_progress() THEN
        RETURN NEW;
    END IF;
    SELECT s.late_event_window INTO window_ FROM @extschema@.usage_settings s;
    IF NEW.occurred_at < NEW.received_at - window_ THEN
        RAISE EXCEPTION 'usage_events.occurred_at % is older than the late-event window (%)', NEW.occurred_at, window_
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'usage_settings.late_event_window sets how far back events may be dated.';
    END IF;
    IF NEW.occurred_at > NEW.received_at + interval '5 minutes' THEN
        RAISE EXCEPTION 'usage_events.occurred_at % is in the future', NEW.occurred_at
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER check_usage_event_time
    BEFORE INSERT ON @extschema@.usage_events
    FOR EACH ROW WHEN (NEW.occurred_at IS DISTINCT FROM NEW.received_at)
    EXECUTE FUNCTION @extschema@.check_usage_event_time();

-- A direct INSERT carrying an idempotency key already used in its organization is skipped
-- (INSERT 0 0), as record_usage would answer "duplicate". record_usage claims its key first,
-- for the event id it is about to write, and the WHEN clause lets that event pass untouched.
CREATE FUNCTION @extschema@.deduplicate_usage_event()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    IF @extschema@.restore_in_progress() THEN
        RETURN NEW;
    END IF;
    INSERT INTO @extschema@.usage_idempotency_keys (organization_id, idempotency_key, event_id)
    VALUES (NEW.organization_id, NEW.idempotency_key, NEW.id)
    ON CONFLICT DO NOTHING;
    IF FOUND OR EXISTS (SELECT 1 FROM @extschema@.usage_idempotency_keys k
                        WHERE k.organization_id = NEW.organization_id
                          AND k.idempotency_key = NEW.idempotency_key AND k.event_id = NEW.id) THEN
        RETURN NEW;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER deduplicate_usage_event
    BEFORE INSERT ON @extschema@.usage_events
    FOR EACH ROW WHEN (NEW.idempotency_key IS NOT NULL AND NOT @extschema@.usage_event_key_claimed(NEW.id))
    EXECUTE FUNCTION @extschema@.deduplicate_usage_event();

-- Members inserting directly meet the limits record_usage enforces, before the row is
-- written (past a soft limit it is stored as overage). Trusted writers (the service role, the
-- owner, record_usage itself) skip it: their inserts stay plain inserts.
CREATE TRIGGER enforce_member_usage_limits
    BEFORE INSERT ON @extschema@.usage_events
    FOR EACH ROW WHEN (NOT @extschema@.usage_writer_is_trusted())
    EXECUTE FUNCTION @extschema@.enforce_member_usage_limits();
CREATE TRIGGER start_member_usage_tally
    BEFORE INSERT ON @extschema@.usage_events
    FOR EACH STATEMENT WHEN (NOT @extschema@.usage_writer_is_trusted())
    EXECUTE FUNCTION @extschema@.start_member_usage_tally();

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

ALTER FUNCTION @extschema@.enforce_member_usage_limits()
    SECURITY DEFINER SET search_path = pg_catalog, @extschema@, pg_temp;
REVOKE ALL ON FUNCTION @extschema@.check_usage_event_time() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.deduplicate_usage_event() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.enforce_member_usage_limits() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.start_member_usage_tally() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.usage_writer_is_trusted() FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.usage_writer_is_trusted() TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.usage_event_key_claimed(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.usage_event_key_claimed(uuid) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.record_usage(uuid, text, numeric, text, timestamptz, jsonb, uuid)
    FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.record_usage(uuid, text, numeric, text, timestamptz, jsonb, uuid)
    TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.record_usage_batch(jsonb) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.record_usage_batch(jsonb) TO authenticated, service_role;
