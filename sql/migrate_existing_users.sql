-- Data migration (seed 000 §10): auth users that predate the extension get what a signup
-- would have given them: profile, personal organization, owner membership, free subscription.
SELECT @extschema@.sync_auth_users();
