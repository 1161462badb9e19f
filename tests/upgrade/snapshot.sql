-- Every row of saas_core's tables and of auth.users as the database holds them before the
-- update, for tests/upgrade/rows_survive.sql to compare against afterwards.
\set ON_ERROR_STOP 1
CREATE SCHEMA upgrade_snapshot;
CREATE TABLE upgrade_snapshot.auth_users AS SELECT * FROM auth.users;
CREATE TABLE upgrade_snapshot.users AS SELECT * FROM users;
CREATE TABLE upgrade_snapshot.organizations AS SELECT * FROM organizations;
CREATE TABLE upgrade_snapshot.organization_members AS SELECT * FROM organization_members;
CREATE TABLE upgrade_snapshot.billing_customers AS SELECT * FROM billing_customers;
CREATE TABLE upgrade_snapshot.org_subscriptions AS SELECT * FROM org_subscriptions;
CREATE TABLE upgrade_snapshot.feature_definitions AS SELECT * FROM feature_definitions;
CREATE TABLE upgrade_snapshot.plan_features AS SELECT * FROM plan_features;
CREATE TABLE upgrade_snapshot.usage_events AS SELECT * FROM usage_events;
CREATE TABLE upgrade_snapshot.usage_aggregations AS SELECT * FROM usage_aggregations;
