-- The page as an app would ask for it: the admin's explicit filter, under RLS.
SELECT id, occurred_at, actor_name, action, resource_type, resource_name, changes
FROM audit_log WHERE organization_id = '00000000-0000-4000-8003-000000000001'
ORDER BY occurred_at DESC LIMIT 50;
