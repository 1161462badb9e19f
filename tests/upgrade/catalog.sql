-- A normalized listing of everything saas_core puts in a database, one line per fact, for
-- comparing two databases with diff: an updated one against a fresh install, a restored one
-- against its source. OIDs never appear; objects are named; an ACL left at its default reads
-- as that default (pg_dump does not restore a REVOKE that changed nothing).
\set ON_ERROR_STOP 1
\pset format unaligned
\pset tuples_only on
\pset footer off

WITH ext AS (
    SELECT e.oid, e.extname, e.extversion, e.extnamespace, e.extowner, e.extconfig, e.extcondition
    FROM pg_extension e WHERE e.extname = 'saas_core'
),
member AS (
    SELECT d.classid, d.objid
    FROM pg_depend d, ext
    WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
),
-- Tables that are the extension's, and auth.users (saas_core's on plain PostgreSQL before
-- 0.2.0, the application's now): what the install leaves on it matters too.
rel AS (
    SELECT c.oid FROM pg_class c JOIN member m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
    UNION
    SELECT c.oid FROM pg_class c WHERE c.oid = to_regclass('auth.users')
),
fn AS (
    SELECT p.oid FROM pg_proc p JOIN member m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
    UNION
    SELECT p.oid FROM pg_proc p WHERE p.pronamespace = to_regnamespace('auth')
),
acl(kind, name, entry) AS (
    SELECT 'table', c.oid::regclass::text, a
    FROM pg_class c JOIN rel ON rel.oid = c.oid, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
    UNION ALL
    SELECT 'function', p.oid::regprocedure::text, a
    FROM pg_proc p JOIN fn ON fn.oid = p.oid, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
    UNION ALL
    SELECT 'schema', n.nspname, a
    FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
    WHERE n.oid IN ((SELECT extnamespace FROM ext), coalesce(to_regnamespace('auth'), 0))
),
-- usage_events' partitions are ordinary tables (not members) for months that differ between
-- databases: their shape is compared, month replaced by YYYY_MM, each distinct fact once.
part AS (
    SELECT c.oid, c.relname::text AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = to_regclass('usage_events')
),
facts(section, fact) AS (
    SELECT DISTINCT 'partition shape', regexp_replace(f, 'usage_events_[0-9]{4}_[0-9]{2}', 'usage_events_YYYY_MM', 'g')
    FROM (
        SELECT format('owner=%s rls=%s acl=%s comment=%s', c.relowner::regrole, c.relrowsecurity,
                      coalesce(c.relacl, acldefault('r', c.relowner)),
                      regexp_replace(obj_description(c.oid, 'pg_class'), '[0-9]{4}-[0-9]{2}', 'YYYY-MM')) AS f
        FROM part p JOIN pg_class c ON c.oid = p.oid
        UNION ALL SELECT pg_get_indexdef(i.indexrelid) FROM part p JOIN pg_index i ON i.indrelid = p.oid
        UNION ALL SELECT format('%s %s', co.conname, pg_get_constraintdef(co.oid)) FROM part p JOIN pg_constraint co ON co.conrelid = p.oid
        UNION ALL SELECT pg_get_triggerdef(t.oid) FROM part p JOIN pg_trigger t ON t.tgrelid = p.oid WHERE NOT t.tgisinternal
        UNION ALL SELECT format('member of the extension: %s', EXISTS (SELECT 1 FROM member m WHERE m.objid = p.oid)) FROM part p
    ) shapes (f)
    UNION ALL
    SELECT 'extension', format('%s %s in %s owned by %s relocatable=%s', e.extname, e.extversion,
                               e.extnamespace::regnamespace, e.extowner::regrole, x.extrelocatable)
    FROM ext e JOIN pg_extension x ON x.oid = e.oid
    UNION ALL
    SELECT 'config dump', format('%s where %L', c::regclass, coalesce(cond, ''))
    FROM ext, unnest(ext.extconfig, ext.extcondition) AS u (c, cond)
    UNION ALL
    SELECT 'member', format('%s %s', o.type, o.identity)
    FROM member m, pg_identify_object(m.classid, m.objid, 0) o
    UNION ALL
    SELECT 'extension depends on', format('%s %s', o.type, o.identity)
    FROM pg_depend d, ext, pg_identify_object(d.refclassid, d.refobjid, d.refobjsubid) o
    WHERE d.classid = 'pg_extension'::regclass AND d.objid = ext.oid AND d.deptype = 'n'
      AND d.refclassid <> 'pg_namespace'::regclass
    UNION ALL
    SELECT 'schema', format('%s owned by %s: %s', n.nspname, n.nspowner::regrole,
                            coalesce(obj_description(n.oid, 'pg_namespace'), ''))
    FROM pg_namespace n WHERE n.oid = to_regnamespace('auth')
    UNION ALL
    SELECT 'table', format('%s kind=%s owner=%s rls=%s force=%s options=%s comment=%s',
                           c.oid::regclass, c.relkind, c.relowner::regrole, c.relrowsecurity,
                           c.relforcerowsecurity, c.reloptions, obj_description(c.oid, 'pg_class'))
    FROM pg_class c JOIN rel ON rel.oid = c.oid
    UNION ALL
    SELECT 'column', format('%s #%s %s %s notnull=%s default=%s collation=%s identity=%s generated=%s comment=%s',
                            a.attrelid::regclass,
                            row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum),
                            a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                            pg_get_expr(ad.adbin, ad.adrelid), a.attcollation::regcollation,
                            a.attidentity, a.attgenerated, col_description(a.attrelid, a.attnum))
    FROM pg_attribute a JOIN rel ON rel.oid = a.attrelid
    LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 'column grant', format('%s.%s %s to %s by %s grantable=%s', a.attrelid::regclass, a.attname,
                                  g.privilege_type, g.grantee::regrole, g.grantor::regrole, g.is_grantable)
    FROM pg_attribute a JOIN rel ON rel.oid = a.attrelid, aclexplode(a.attacl) g
    WHERE a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 'constraint', format('%s %s %s deferrable=%s validated=%s', co.conrelid::regclass, co.conname,
                                pg_get_constraintdef(co.oid), co.condeferrable, co.convalidated)
    FROM pg_constraint co JOIN rel ON rel.oid = co.conrelid
    UNION ALL
    SELECT 'index', pg_get_indexdef(i.indexrelid)
    FROM pg_index i JOIN rel ON rel.oid = i.indrelid
    UNION ALL
    SELECT 'policy', format('%s %s %s permissive=%s to %s using (%s) check (%s)', p.polrelid::regclass,
                            p.polname, p.polcmd, p.polpermissive,
                            (SELECT string_agg(CASE r WHEN 0 THEN 'public' ELSE r::regrole::text END, ',' ORDER BY 1)
                             FROM unnest(p.polroles) r),
                            pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
    FROM pg_policy p JOIN rel ON rel.oid = p.polrelid
    UNION ALL
    SELECT 'trigger', format('%s enabled=%s', pg_get_triggerdef(t.oid), t.tgenabled)
    FROM pg_trigger t JOIN rel ON rel.oid = t.tgrelid
    WHERE NOT t.tgisinternal
    UNION ALL
    SELECT 'function', format('%s owner=%s comment=%s', pg_get_functiondef(p.oid), p.proowner::regrole,
                              obj_description(p.oid, 'pg_proc'))
    FROM pg_proc p JOIN fn ON fn.oid = p.oid
    WHERE p.prokind <> 'a'
    UNION ALL
    SELECT 'grant', format('%s %s: %s to %s by %s grantable=%s', kind, name, (entry).privilege_type,
                           CASE (entry).grantee WHEN 0 THEN 'PUBLIC' ELSE (entry).grantee::regrole::text END,
                           (entry).grantor::regrole, (entry).is_grantable)
    FROM acl
)
SELECT section || ': ' || replace(fact, E'\n', E'\n    ') FROM facts ORDER BY section, fact;
