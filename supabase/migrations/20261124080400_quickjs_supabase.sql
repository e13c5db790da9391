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
-- every ready run becomes POST <function_url>/runs/<id>/resume (the function runs it in its
-- own invocation: no worker is needed), authorised with a secret key from Vault (secret name
-- quickjs_service_role_key: an sb_secret_… key or the legacy service role key), or, without
-- Vault, settings service_role_key. The pg_cron tick wakes sleepers and re-announces lost
-- dispatches, so woken, requeued and retried runs reach the function the same way.
do $$
begin
  if exists (select 1 from pg_available_extensions where name = 'pg_net') then
    create extension if not exists pg_net;
  end if;
exception when others then
  raise notice 'quickjs: pg_net not enabled (%): enable it for dispatch = pg_net', sqlerrm;
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
  -- /resume answers within 25 s (its invocation goes on in the background after that); a
  -- cold start adds a few seconds. 60 s leaves room; pg_net's default is 5 s.
  execute 'select net.http_post(url := $1, headers := $2, body := $3, timeout_milliseconds := 60000)'
    using rtrim(v_url, '/') || '/runs/' || p_run_id || '/resume',
          -- new secret keys (sb_secret_…) are not JWTs and go in apikey only; a legacy
          -- service role key (a JWT) goes in both
          jsonb_build_object('Content-Type', 'application/json', 'apikey', coalesce(v_key, ''))
            || case when v_key like 'sb\_%' then '{}'::jsonb
                    else jsonb_build_object('Authorization', 'Bearer ' || coalesce(v_key, '')) end,
          '{}'::jsonb;
end $$;
comment on function quickjs.dispatch_http is
  'pg_net dispatch: POST <function_url>/runs/<id>/resume with the secret key from Vault.';
revoke execute on function quickjs.dispatch_http(uuid) from public;

-- ---- pg_cron tick --------------------------------------------------------------------------
-- Requeue runs whose worker vanished, wake sleepers that are due (which dispatches them),
-- re-announce queued runs whose announcement was lost. Every 10 s where pg_cron takes
-- second schedules (1.5 and later, as on Supabase), else every minute (1.4: Debian's).
--
-- Detected without superuser-only settings: Supabase's postgres role is not a superuser,
-- and current_setting('shared_preload_libraries') raises permission denied there. pg_cron
-- is usable when its extension exists (Supabase: enabled from the dashboard, or created
-- below when this role may) and the cron schema is granted (Supabase grants it to postgres).
create function quickjs.schedule_tick() returns text language plpgsql as $$
declare
  v_version text := (select extversion from pg_extension where extname = 'pg_cron');
  v_schedule text;
begin
  if v_version is null or to_regnamespace('cron') is null then
    raise notice 'quickjs: pg_cron is not enabled here: the tick is not scheduled';
    return null;
  end if;
  -- extversion is '1.4', '1.5', '1.6.4', …: second schedules came with 1.5
  v_schedule := case
    when string_to_array(regexp_replace(v_version, '[^0-9.].*$', ''), '.')::int[] >= array[1, 5]
    then '10 seconds' else '* * * * *' end;
  -- cron.schedule(name, …) replaces a job of the same name: calling this again is harmless
  execute 'select cron.schedule($1, $2, $3)' using 'quickjs-tick', v_schedule, 'select quickjs.tick()';
  return v_schedule;
exception when others then
  -- pg_cron runs jobs only in its cron.database_name; elsewhere scheduling is refused
  raise notice 'quickjs: pg_cron tick not scheduled: %', sqlerrm;
  return null;
end $$;
comment on function quickjs.schedule_tick is
  'Schedules quickjs.tick() with pg_cron (every 10 s on pg_cron 1.5+, else every minute); returns '
  'the schedule, or null when pg_cron is not usable here. The migration calls it; call it again '
  'after enabling pg_cron.';
revoke execute on function quickjs.schedule_tick() from public;

do $$
begin
  if not exists (select 1 from pg_available_extensions where name = 'pg_cron') then
    return;
  end if;
  if not exists (select 1 from pg_extension where extname = 'pg_cron') then
    begin
      create extension if not exists pg_cron;
    exception when others then
      -- not preloaded (pg_cron refuses to load then), or this role may not create it
      raise notice 'quickjs: pg_cron not enabled (%): enable it, then run select quickjs.schedule_tick()', sqlerrm;
      return;
    end;
  end if;
  perform quickjs.schedule_tick();
end $$;
