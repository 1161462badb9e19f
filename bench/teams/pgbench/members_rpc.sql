-- A member's page: get_organization_members() as an authenticated member (5,000 members).
SELECT * FROM get_organization_members('00000000-0000-4000-8003-000000000001');
