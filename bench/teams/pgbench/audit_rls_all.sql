-- Every entry of the admin's organization (1,000 of 1,000,000), RLS alone choosing it.
SELECT id, occurred_at, actor_name, action, resource_type, resource_name, changes FROM audit_log;
