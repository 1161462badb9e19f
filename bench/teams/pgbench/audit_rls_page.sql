-- An admin's audit page, RLS alone choosing the organization: the latest 50 entries.
SELECT id, occurred_at, actor_name, action, resource_type, resource_name, changes
FROM audit_log ORDER BY occurred_at DESC LIMIT 50;
