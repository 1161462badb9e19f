-- Before the pgTAP suites run on the updated database: the fixture's catalog edits undone
-- (the suites check the seed's own numbers), everything else left as the update made it.
\set ON_ERROR_STOP 1
DELETE FROM plan_features WHERE feature_key = 'max_widgets';
DELETE FROM feature_definitions WHERE feature_key = 'max_widgets';
UPDATE plan_features SET limit_value = 100 WHERE plan = 'free' AND feature_key = 'max_records';
UPDATE plan_features SET flags = flags || '{"sso": false}' WHERE plan = 'pro' AND feature_key = 'features';
INSERT INTO plan_features (plan, feature_key, limit_value) VALUES ('enterprise', 'max_schedules', -1);
