-- Member management RPCs (src/members.rs): the members page of an app, with RPCs alone.
-- Each takes the caller from the JWT and checks the caller's permissions (roles.sql).

-- How a user is named to others (members pages, invitations, the audit log): display name,
-- else username, else email.
CREATE FUNCTION @extschema@.user_label(user_id uuid)
RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(u.display_name, u.username, u.email) FROM @extschema@.users u WHERE u.id = $1
$$;
REVOKE ALL ON FUNCTION @extschema@.user_label(uuid) FROM PUBLIC, anon, authenticated, service_role;

REVOKE ALL ON FUNCTION @extschema@.get_my_organizations() FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.get_my_organizations() TO authenticated;
REVOKE ALL ON FUNCTION @extschema@.get_organization(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.get_organization(uuid) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.get_organization_by_slug(text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.get_organization_by_slug(text) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.get_organization_members(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.get_organization_members(uuid) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.update_member_role(uuid, uuid, text) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.update_member_role(uuid, uuid, text) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.remove_member(uuid, uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.remove_member(uuid, uuid) TO authenticated, service_role;
REVOKE ALL ON FUNCTION @extschema@.leave_organization(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.leave_organization(uuid) TO authenticated;
REVOKE ALL ON FUNCTION @extschema@.delete_organization(uuid) FROM PUBLIC, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION @extschema@.delete_organization(uuid) TO authenticated, service_role;
