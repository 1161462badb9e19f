-- Every row of saas_core's tables and of auth.users, one sorted line each, for diffing a
-- restored database against its source.
\set ON_ERROR_STOP 1
\pset format unaligned
\pset tuples_only on
SELECT line FROM (
    SELECT 'auth.users ' || to_jsonb(x)::text AS line FROM auth.users x
    UNION ALL SELECT 'users ' || to_jsonb(x)::text FROM users x
    UNION ALL SELECT 'organizations ' || to_jsonb(x)::text FROM organizations x
    UNION ALL SELECT 'organization_members ' || to_jsonb(x)::text FROM organization_members x
    UNION ALL SELECT 'billing_customers ' || to_jsonb(x)::text FROM billing_customers x
    UNION ALL SELECT 'org_subscriptions ' || to_jsonb(x)::text FROM org_subscriptions x
    UNION ALL SELECT 'feature_definitions ' || to_jsonb(x)::text FROM feature_definitions x
    UNION ALL SELECT 'plan_features ' || to_jsonb(x)::text FROM plan_features x
    UNION ALL SELECT 'usage_events ' || to_jsonb(x)::text FROM usage_events x
    UNION ALL SELECT 'usage_aggregations ' || to_jsonb(x)::text FROM usage_aggregations x
    UNION ALL SELECT 'usage_settings ' || to_jsonb(x)::text FROM usage_settings x
    UNION ALL SELECT 'usage_rollup_state ' || to_jsonb(x)::text FROM usage_rollup_state x
    UNION ALL SELECT 'usage_active_users ' || to_jsonb(x)::text FROM usage_active_users x
    UNION ALL SELECT 'usage_dirty_buckets ' || to_jsonb(x)::text FROM usage_dirty_buckets x
    UNION ALL SELECT 'usage_idempotency_keys ' || to_jsonb(x)::text FROM usage_idempotency_keys x
    UNION ALL SELECT 'usage_meter_locks ' || to_jsonb(x)::text FROM usage_meter_locks x
    UNION ALL SELECT 'usage_meter_leases ' || to_jsonb(x)::text FROM usage_meter_leases x
    UNION ALL SELECT 'usage_counters ' || to_jsonb(x)::text FROM usage_counters x
    UNION ALL SELECT 'permissions ' || to_jsonb(x)::text FROM permissions x
    UNION ALL SELECT 'roles ' || to_jsonb(x)::text FROM roles x
    UNION ALL SELECT 'role_permissions ' || to_jsonb(x)::text FROM role_permissions x
    UNION ALL SELECT 'user_roles ' || to_jsonb(x)::text FROM user_roles x
    UNION ALL SELECT 'invitation_settings ' || to_jsonb(x)::text FROM invitation_settings x
    UNION ALL SELECT 'invitations ' || to_jsonb(x)::text FROM invitations x
    UNION ALL SELECT 'audit_log ' || to_jsonb(x)::text FROM audit_log x
    UNION ALL SELECT 'notifications ' || to_jsonb(x)::text FROM notifications x
    UNION ALL SELECT 'notification_preferences ' || to_jsonb(x)::text FROM notification_preferences x
    UNION ALL SELECT 'user_preferences ' || to_jsonb(x)::text FROM user_preferences x
    UNION ALL SELECT 'teams ' || to_jsonb(x)::text FROM teams x
    UNION ALL SELECT 'team_members ' || to_jsonb(x)::text FROM team_members x
    UNION ALL SELECT 'workspaces ' || to_jsonb(x)::text FROM workspaces x
    UNION ALL SELECT 'workspace_members ' || to_jsonb(x)::text FROM workspace_members x
    UNION ALL SELECT 'plans ' || to_jsonb(x)::text FROM plans x
    UNION ALL SELECT 'plan_prices ' || to_jsonb(x)::text FROM plan_prices x
    UNION ALL SELECT 'billing_events ' || to_jsonb(x)::text FROM billing_events x
    UNION ALL SELECT 'pending_seat_updates ' || to_jsonb(x)::text FROM pending_seat_updates x
    UNION ALL SELECT 'invoices ' || to_jsonb(x)::text FROM invoices x
    UNION ALL SELECT 'invoice_line_items ' || to_jsonb(x)::text FROM invoice_line_items x
    UNION ALL SELECT 'payment_methods ' || to_jsonb(x)::text FROM payment_methods x
    UNION ALL SELECT 'payment_transactions ' || to_jsonb(x)::text FROM payment_transactions x
    UNION ALL SELECT 'coupons ' || to_jsonb(x)::text FROM coupons x
    UNION ALL SELECT 'coupon_plans ' || to_jsonb(x)::text FROM coupon_plans x
    UNION ALL SELECT 'coupon_redemptions ' || to_jsonb(x)::text FROM coupon_redemptions x
    UNION ALL SELECT 'usage_records ' || to_jsonb(x)::text FROM usage_records x
) t ORDER BY line;
