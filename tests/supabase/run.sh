# saas_core on databases built like self-hosted Supabase (sourced by scripts/test.sh, in a
# cluster whose bootstrap superuser is supabase_admin and whose postgres role is not one).
#
#   supabase_install_test before|after
# before: the image's auth schema, the "Managing user data" guide's trigger, an account,
#         CREATE EXTENSION saas_core as postgres, then GoTrue's migrations as supabase_auth_admin.
# after:  the same, with GoTrue's migrations run before saas_core.
supabase_install_test() {
  local when="$1" db="sb_install_$1"
  psql_q -d postgres -c "CREATE DATABASE $db" || return 1
  psql_q -d "$db" -v DBNAME="$db" -f tests/supabase/auth_init.sql || return 1
  psql_q -d "$db" -f tests/supabase/managing_user_data_guide.sql || return 1
  psql_q -d "$db" -c "INSERT INTO auth.users (id, aud, role, email, raw_user_meta_data, created_at)
                      VALUES ('11111111-1111-1111-1111-111111111111', 'authenticated', 'authenticated',
                              'early@example.com', '{\"full_name\": \"Early Bird\"}', now() - interval '1 year'),
                             ('11111111-1111-1111-1111-111111111112', 'authenticated', 'authenticated',
                              'hostile@example.com', ('{\"score\": 1e400, \"a\": ' || repeat('[', 300) || repeat(']', 300) || '}')::jsonb,
                              now() - interval '1 year')" || return 1
  if [ "$when" = after ]; then psql_q -d "$db" -f tests/supabase/gotrue_migrations.sql || return 1; fi
  # postgres is no superuser: this works because saas_core is a trusted extension.
  psql_q -U postgres -d "$db" -c "CREATE EXTENSION saas_core" || return 1
  if [ "$when" = before ]; then psql_q -d "$db" -f tests/supabase/gotrue_migrations.sql || return 1; fi
  pg_prove -d "$db" tests/supabase/install.sql
}
