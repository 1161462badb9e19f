-- The same rows by hand, as a superuser: members, their profiles and their roles' ranks.
SELECT m.user_id, u.email, u.display_name, u.username, u.avatar_url, m.role, r.hierarchy_level, m.created_at
FROM organization_members m
JOIN users u ON u.id = m.user_id
JOIN roles r ON r.key = m.role AND r.scope = 'organization'
            AND (r.organization_id IS NULL OR r.organization_id = m.organization_id)
WHERE m.organization_id = '00000000-0000-4000-8003-000000000001'
ORDER BY r.hierarchy_level DESC, m.created_at, m.user_id;
