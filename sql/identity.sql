-- Identity: one profile row per auth user (seed 000 §1).

CREATE TABLE @extschema@.users (
    -- The auth.users row's id. Not a foreign key: auth.users may belong to another owner
    -- (Supabase's GoTrue) and a restore loads the two in any order; provisioning's triggers on
    -- auth.users create and delete profiles, and check_profile refuses a profile without one.
    id                          uuid PRIMARY KEY,
    -- core identity
    username                    text CHECK (@extschema@.is_valid_username(username)),
    display_name                text CHECK (char_length(display_name) <= 100),
    personal_title              text,
    first_name                  text CHECK (char_length(first_name) <= 100),
    middle_name                 text CHECK (char_length(middle_name) <= 100),
    last_name                   text CHECK (char_length(last_name) <= 100),
    avatar_url                  text,
    -- contact
    email                       text,
    phone_country_code          text,
    phone_number                text,
    -- personal address
    personal_apt_suite          text,
    personal_street_address_1   text,
    personal_street_address_2   text,
    personal_city               text,
    personal_state              text,
    personal_postal_code        text,
    personal_country            text,
    -- about
    bio                         text CHECK (char_length(bio) <= 5000),
    website                     text,
    education                   jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(education) = 'array'),
    work_experience             jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(work_experience) = 'array'),
    -- business
    business_position           text,
    business_company            text,
    business_apt_suite          text,
    business_street_address_1   text,
    business_street_address_2   text,
    business_city               text,
    business_state              text,
    business_postal_code        text,
    business_country            text,
    -- preferences
    timezone                    text,
    locale                      text,
    preferences                 jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(preferences) = 'object'),
    -- system
    account_type                text NOT NULL DEFAULT 'user'
                                CHECK (account_type IN ('super_admin', 'admin', 'user')),
    profile_completed           boolean NOT NULL DEFAULT false,
    onboarding_completed        boolean NOT NULL DEFAULT false,
    onboarding_completed_at     timestamptz,
    last_active_at              timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    -- since 0.2.0, followed from auth.users
    phone                       text,
    is_anonymous                boolean NOT NULL DEFAULT false,
    deleted_at                  timestamptz
);

COMMENT ON TABLE @extschema@.users IS
    'Application profile of each auth.users row; created by the on_auth_user_created trigger.';
COMMENT ON COLUMN @extschema@.users.email IS
    'The sign-in email, followed from auth.users (changes arrive through the auth.users update trigger).';
COMMENT ON COLUMN @extschema@.users.phone IS
    'The sign-in phone, followed from auth.users. phone_country_code/phone_number are the user''s own contact details.';
COMMENT ON COLUMN @extschema@.users.is_anonymous IS
    'An anonymous sign-in (Supabase anonymous auth): a personal organization, no team organizations, no username.';
COMMENT ON COLUMN @extschema@.users.deleted_at IS
    'When the account was soft-deleted in auth.users; the profile''s personal data is cleared then.';
COMMENT ON COLUMN @extschema@.users.account_type IS
    'Platform role: super_admin, admin (console access) or user. Only the service role changes it.';

-- Usernames are unique regardless of case (check_username_available relies on this index).
CREATE UNIQUE INDEX users_username_lower_key ON @extschema@.users (lower(username))
    WHERE username IS NOT NULL;
CREATE INDEX users_email_idx ON @extschema@.users (lower(email));
CREATE INDEX users_account_type_idx ON @extschema@.users (account_type)
    WHERE account_type <> 'user';

CREATE TRIGGER update_users_updated_at
    BEFORE UPDATE ON @extschema@.users
    FOR EACH ROW EXECUTE FUNCTION @extschema@.update_updated_at_column();

CREATE TRIGGER check_profile
    BEFORE INSERT OR UPDATE OF id, username ON @extschema@.users
    FOR EACH ROW EXECUTE FUNCTION @extschema@.check_profile();

-- Privileges: API roles get nothing by default (Supabase's default privileges would
-- otherwise grant ALL), then exactly what the policies below are written for.
REVOKE ALL ON @extschema@.users FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON @extschema@.users TO authenticated;
-- Profile fields only: id, email, account_type, onboarding and timestamps are not the user's to set.
GRANT UPDATE (
    username, display_name, personal_title, first_name, middle_name, last_name, avatar_url,
    phone_country_code, phone_number,
    personal_apt_suite, personal_street_address_1, personal_street_address_2, personal_city,
    personal_state, personal_postal_code, personal_country,
    bio, website, education, work_experience,
    business_position, business_company, business_apt_suite, business_street_address_1,
    business_street_address_2, business_city, business_state, business_postal_code, business_country,
    timezone, locale, preferences, profile_completed, last_active_at
) ON @extschema@.users TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.users TO service_role;

ALTER TABLE @extschema@.users ENABLE ROW LEVEL SECURITY;

CREATE POLICY users_select_own ON @extschema@.users
    FOR SELECT TO authenticated
    USING (id = (SELECT auth.uid()));

CREATE POLICY users_update_own ON @extschema@.users
    FOR UPDATE TO authenticated
    USING (id = (SELECT auth.uid()))
    WITH CHECK (id = (SELECT auth.uid()));

CREATE POLICY users_service_role_all ON @extschema@.users
    FOR ALL TO service_role
    USING (true) WITH CHECK (true);

SELECT pg_catalog.pg_extension_config_dump('@extschema@.users', '');

-- Functions: nothing for PUBLIC, then deliberate grants.
REVOKE ALL ON FUNCTION @extschema@.is_valid_username(text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.is_valid_username(text) TO anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.check_username_available(text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.check_username_available(text) TO anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.complete_onboarding(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.complete_onboarding(uuid) TO authenticated, service_role;
-- Trigger functions are never called directly.
REVOKE ALL ON FUNCTION @extschema@.check_profile() FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.update_updated_at_column() FROM PUBLIC, anon, authenticated, service_role;
-- It reads usernames and accounts the caller cannot see.
ALTER FUNCTION @extschema@.check_profile()
    SECURITY DEFINER SET search_path = pg_catalog, @extschema@, pg_temp;
