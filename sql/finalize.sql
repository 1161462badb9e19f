-- The last step of the install script.

-- Accounts that predate the extension get what a signup would have given them (seed 000 §10):
-- profile, personal organization, owner membership, free subscription. Not during a restore,
-- which brings their rows along.
SELECT @extschema@.provision_existing_accounts_at_install();

-- Everything belongs to the role that ran CREATE EXTENSION. When a database owner who is not
-- a superuser installs saas_core as a trusted extension, PostgreSQL runs the script as the
-- bootstrap superuser; handing the objects over lets that owner add policies, columns and
-- indexes to saas_core's tables, and keeps the SECURITY DEFINER functions running with the
-- owner's privileges, never a superuser's. Update scripts call it again for what they add.
CREATE FUNCTION @extschema@.hand_objects_to_owner()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ext   oid;
    owner regrole;
    stmt  text;
BEGIN
    SELECT e.oid, e.extowner::regrole INTO ext, owner FROM pg_extension e WHERE e.extname = 'saas_core';
    FOR stmt IN
        SELECT format('ALTER %s %s OWNER TO %s', CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
                      c.oid::regclass, owner)
        FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
        WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_extension'::regclass
          AND d.refobjid = ext AND d.deptype = 'e' AND c.relkind IN ('r', 'p', 'v', 'S') AND c.relowner <> owner
        UNION ALL
        SELECT format('ALTER ROUTINE %s OWNER TO %s', p.oid::regprocedure, owner)
        FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
        WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_extension'::regclass
          AND d.refobjid = ext AND d.deptype = 'e' AND p.proowner <> owner
    LOOP
        EXECUTE stmt;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION @extschema@.hand_objects_to_owner() FROM PUBLIC, anon, authenticated, service_role;

SELECT @extschema@.hand_objects_to_owner();
