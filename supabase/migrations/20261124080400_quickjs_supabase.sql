-- Durable QuickJS tasks, 5 of 5: the Supabase-only parts. Roles, grants and policies, pg_net
-- dispatch with the key from Vault, and the pg_cron tick. Each part checks that what it
-- needs exists, so this file applies cleanly on plain PostgreSQL too (where it does nothing
-- but define quickjs.dispatch_http and revoke PUBLIC's execute). It comes last, so the
-- grants cover every function the earlier files define.

-- ---- roles, grants and policies -------------------------------------------------------------
-- service_role: everything (it also bypasses RLS). authenticated: read its own runs and logs.
do $$
begin
  if exists (select 1 from pg_roles where rolname = 'service_role') then
    grant usage on schema quickjs to service_role;
    grant all on all tables in schema quickjs to service_role;
    grant all on all sequences in schema quickjs to service_role;
    grant execute on all functions in schema quickjs to service_role;
  end if;
  if exists (select 1 from pg_roles where rolname = 'authenticated') then
    grant usage on schema quickjs to authenticated;
    grant select on quickjs.runs, quickjs.run_logs to authenticated;
    create policy runs_read_own on quickjs.runs for select to authenticated
      using (owner_id = quickjs.current_user_id());
    create policy run_logs_read_own on quickjs.run_logs for select to authenticated
      using (exists (select 1 from quickjs.runs r
                     where r.id = run_id and r.owner_id = quickjs.current_user_id()));
  end if;
  -- functions are executable by PUBLIC by default; the state machine and the operator
  -- tools are not, nor are functions later migrations add
  revoke execute on all functions in schema quickjs from public;
  alter default privileges in schema quickjs revoke execute on functions from public;
  if exists (select 1 from pg_roles where rolname = 'authenticated') then
    grant execute on function quickjs.current_user_id() to authenticated;
  end if;
end $$;

-- ---- pg_net dispatch ---------------------------------------------------------------------
-- With settings dispatch = 'pg_net' and function_url = 'https://<ref>.supabase.co/functions/v1/quickjs',
-- every ready run becomes POST <function_url>/runs/<id>/resume, authorised with the service
-- role key from Vault (secret name quickjs_service_role_key).
do $$
begin
  if exists (select 1 from pg_available_extensions where name = 'pg_net') then
    create extension if not exists pg_net;
  end if;
end $$;

create function quickjs.dispatch_http(p_run_id uuid) returns void language plpgsql
security definer set search_path = quickjs, pg_temp as $$
declare
  v_url text := (select value from quickjs.settings where key = 'function_url');
  v_key text;
begin
  if to_regnamespace('net') is null or v_url is null then
    perform pg_notify('quickjs_runs', p_run_id::text);
    return;
  end if;
  if to_regclass('vault.decrypted_secrets') is not null then
    execute 'select decrypted_secret from vault.decrypted_secrets where name = $1'
      into v_key using 'quickjs_service_role_key';
  end if;
  v_key := coalesce(v_key, (select value from quickjs.settings where key = 'service_role_key'));
  -- /resume runs a whole invocation (up to the engine's 140 s budget); pg_net's default
  -- timeout is 5 s
  execute 'select net.http_post(url := $1, headers := $2, body := $3, timeout_milliseconds := 150000)'
    using rtrim(v_url, '/') || '/runs/' || p_run_id || '/resume',
          jsonb_build_object('Content-Type', 'application/json',
                             'Authorization', 'Bearer ' || coalesce(v_key, '')),
          '{}'::jsonb;
end $$;
comment on function quickjs.dispatch_http is
  'pg_net dispatch: POST <function_url>/runs/<id>/resume with the service role key from Vault.';
revoke execute on function quickjs.dispatch_http(uuid) from public;

-- ---- pg_cron tick --------------------------------------------------------------------------
-- Every minute: requeue runs whose worker vanished, wake sleepers that are due (which
-- dispatches them), re-announce queued runs whose announcement was lost.
do $$
begin
  if exists (select 1 from pg_available_extensions where name = 'pg_cron')
     and current_setting('shared_preload_libraries', true) like '%pg_cron%' then
    create extension if not exists pg_cron;
    if to_regnamespace('cron') is not null then
      execute $cron$select cron.schedule('quickjs-tick', '* * * * *', 'select quickjs.tick()')$cron$;
    end if;
  end if;
exception when others then
  -- pg_cron only runs jobs in its cron.database_name; elsewhere scheduling is refused
  raise notice 'quickjs: pg_cron tick not scheduled: %', sqlerrm;
end $$;
