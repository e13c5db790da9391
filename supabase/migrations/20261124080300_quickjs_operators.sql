-- Durable QuickJS tasks, 4 of 5: operator tools for scripts/diagnose-vm-state.ts. What
-- "stuck" means (find_stuck_runs), repairing one stuck run (stuck --fix) with the same steps
-- the state machine uses (lose_lease, finish_run, wake_run), and a capacity view of the
-- stored snapshots.

-- Runs that need an operator: what "stuck" means is spelled out here, in one place.
create function quickjs.find_stuck_runs(p_now timestamptz default now())
returns jsonb language sql stable as $$
  select coalesce(jsonb_agg(x order by x ->> 'since'), '[]') from (
    select quickjs.run_json(r) || jsonb_build_object('problem', 'lease expired', 'since', r.lease_expires_at) as x
      from quickjs.runs r where r.status = 'running' and r.lease_expires_at < p_now
    union all
    select quickjs.run_json(r) || jsonb_build_object('problem', 'suspended without a snapshot', 'since', r.updated_at)
      from quickjs.runs r where r.status = 'suspended'
        and not exists (select 1 from quickjs.snapshots s where s.run_id = r.id)
    union all
    select quickjs.run_json(r) || jsonb_build_object('problem', 'waiting for children that ended', 'since', r.updated_at)
      from quickjs.runs r where r.status = 'suspended' and r.wake_at is null
        and not exists (select 1 from quickjs.runs c where c.parent_run_id = r.id
          and c.status not in ('completed', 'failed', 'cancelled'))
        and not exists (select 1 from quickjs.calls k where k.run_id = r.id and k.status in ('succeeded', 'failed')
          and k.seq = any (quickjs.parked_calls(r)))
    union all
    select quickjs.run_json(r) || jsonb_build_object('problem', 'suspended though a parked call settled', 'since', r.updated_at)
      from quickjs.runs r join quickjs.snapshots s on s.run_id = r.id
      where r.status = 'suspended' and r.wake_at is null
        and exists (select 1 from quickjs.calls k where k.run_id = r.id and k.seq = any (quickjs.parked_calls(r))
          and k.status in ('succeeded', 'failed'))
    union all
    select quickjs.run_json(r) || jsonb_build_object('problem', 'due but not picked up for 10 minutes', 'since', coalesce(r.wake_at, r.run_at))
      from quickjs.runs r where (r.status = 'queued' and r.run_at < p_now - interval '10 minutes')
         or (r.status = 'suspended' and r.wake_at < p_now - interval '10 minutes')
  ) q
$$;
comment on function quickjs.find_stuck_runs is 'Runs in a state that should not last; scripts/diagnose-vm-state.ts lists them.';

-- Each repair answers one of find_stuck_runs's problems, in one transaction, with a note in
-- the run's log.
create function quickjs.repair_run(p_run_id uuid, p_now timestamptz default now())
returns jsonb language plpgsql as $$
declare
  r quickjs.runs;
  v_parked int[];
  v_has_snapshot boolean;
  v_settled_before int;
  v_settled_after int;
  child quickjs.runs;
  v_action text := 'none';
  v_reason text;
begin
  select * into r from quickjs.runs where id = p_run_id for update;
  if not found then
    perform quickjs.raise_error('RUN_NOT_FOUND', format('run %s does not exist', p_run_id), 'QJ404');
  end if;
  v_parked := quickjs.parked_calls(r);
  v_has_snapshot := exists (select 1 from quickjs.snapshots where run_id = r.id);

  if r.status = 'running' and r.lease_expires_at < p_now then
    -- the worker vanished: what the lease sweep does, for this run only
    v_reason := format('lease of %s expired at %s', r.lease_owner, r.lease_expires_at);
    r := quickjs.lose_lease(r, p_now);
    if r.status = 'failed' then
      v_action := 'failed';
      v_reason := format('its lease expired %s times; failed', r.lease_expirations);
    else
      v_action := 'requeued';
      v_reason := v_reason || '; requeued';
    end if;

  elsif r.status = 'suspended' and not v_has_snapshot then
    -- its VM is gone: nothing can continue it, and waiting would never end
    v_reason := 'suspended without a VM snapshot: the run cannot be resumed';
    r := quickjs.finish_run(r, 'failed', null,
      jsonb_build_object('code', 'RUN_UNRECOVERABLE', 'name', 'RunUnrecoverable',
        'message', 'the run was suspended but its VM snapshot is missing, so it cannot be '
          'resumed; failed by quickjs.repair_run'),
      p_now);
    v_action := 'failed';

  elsif r.status = 'suspended' then
    select count(*) into v_settled_before from quickjs.calls
    where run_id = r.id and seq = any (v_parked) and status in ('succeeded', 'failed');
    -- children that ended without their outcome reaching this run
    for child in
      select c.* from quickjs.calls k join quickjs.runs c on c.id = k.child_run_id
      where k.run_id = r.id and k.status not in ('succeeded', 'failed')
        and c.status in ('completed', 'failed', 'cancelled')
    loop
      perform quickjs.settle_from_child(child, p_now);
    end loop;
    -- a child run that was deleted (calls.child_run_id is then null) will never answer
    update quickjs.calls set status = 'failed', completed_at = p_now,
      error = jsonb_build_object('code', 'CHILD_NOT_FOUND', 'name', 'ChildRunLost',
        'message', format('the child run of call %s no longer exists', seq))
    where run_id = r.id and seq = any (v_parked) and service = 'tasks'
      and child_run_id is null and status not in ('succeeded', 'failed');
    select count(*) into v_settled_after from quickjs.calls
    where run_id = r.id and seq = any (v_parked) and status in ('succeeded', 'failed');
    if v_settled_after > 0 or r.wake_at <= p_now then
      v_reason := case
        when v_settled_after > v_settled_before then format(
          'settled %s call(s) from child runs that had ended; queued', v_settled_after - v_settled_before)
        when v_settled_after > 0 then 'a call it waits for had settled; queued'
        else format('its wake time %s had passed; queued', r.wake_at) end;
      v_action := case when v_settled_after > v_settled_before then 'settled' else 'queued' end;
      r := quickjs.wake_run(r.id, p_now);
    end if;

  elsif r.status = 'queued' and r.run_at <= p_now then
    -- due, but its announcement was lost (worker down, pg_net failure): announce it again
    perform quickjs.dispatch(r.id);
    v_action := 'dispatched';
    v_reason := format('queued since %s; announced again', r.run_at);
  end if;

  if v_action <> 'none' then
    perform quickjs.system_log(r, format('repair_run: %s (%s)', v_action, v_reason), p_now);
  end if;
  return jsonb_build_object('action', v_action, 'reason', v_reason, 'run', quickjs.run_json(r));
end $$;
comment on function quickjs.repair_run is
  'Repairs one run find_stuck_runs lists, in one transaction: an expired lease is requeued (and '
  'counted), a suspended run without a snapshot fails with RUN_UNRECOVERABLE, a run waiting on '
  'children that ended gets their outcomes and is queued, a due run is queued and announced '
  'again. Returns {action: requeued | failed | settled | queued | dispatched | none, reason, run}.';

create function quickjs.list_snapshots(p_limit int default 20) returns jsonb
language sql stable as $$
  select jsonb_build_object(
    'count', (select count(*) from quickjs.snapshots),
    'totalBytes', (select coalesce(sum(size_bytes), 0) from quickjs.snapshots),
    'snapshots', coalesce((
      select jsonb_agg(jsonb_build_object(
          'runId', s.run_id, 'task', r.task_name, 'taskVersion', r.task_version,
          'status', r.status, 'sizeBytes', s.size_bytes, 'memoryBytes', s.memory_bytes,
          'format', s.format, 'wasmSha256', s.wasm_sha256, 'createdAt', s.created_at)
        order by s.size_bytes desc, s.created_at)
      from (select * from quickjs.snapshots order by size_bytes desc, created_at
            limit greatest(p_limit, 0)) s
      join quickjs.runs r on r.id = s.run_id), '[]'))
$$;
comment on function quickjs.list_snapshots is
  'The p_limit largest snapshots (run, task, stored size, VM memory, build, created) and the count and '
  'total size of all of them: a capacity view for diagnose-vm-state.';

-- Whether ready runs reach an executor: the dispatch settings, what they need (pg_net, the
-- function's URL and key; a listening worker for notify), the pg_cron tick, and the runs
-- that have been runnable for more than p_after_seconds without anyone taking them. A run
-- is normally claimed within a second of becoming due; a minute means nobody is there.
create function quickjs.dispatch_health(p_now timestamptz default now(), p_after_seconds int default 60)
returns jsonb language plpgsql stable as $$
declare
  v_mode text := coalesce((select value from quickjs.settings where key = 'dispatch'), 'notify');
  v_url text := (select value from quickjs.settings where key = 'function_url');
  v_pg_net boolean := to_regnamespace('net') is not null;
  v_key boolean := exists (select 1 from quickjs.settings where key = 'service_role_key');
  v_tick text;
  v_listeners int;
  v_waiting int;
  v_oldest timestamptz;
  v_problems text[] := '{}';
begin
  if not v_key and to_regclass('vault.decrypted_secrets') is not null then
    execute 'select exists (select 1 from vault.decrypted_secrets where name = $1)'
      into v_key using 'quickjs_service_role_key';
  end if;
  if to_regclass('cron.job') is not null then
    begin
      execute 'select schedule from cron.job where jobname = $1 limit 1' into v_tick using 'quickjs-tick';
    exception when insufficient_privilege then
      v_tick := null;
    end;
  end if;
  -- a worker's LISTEN connection shows that statement as its last one (visible to the
  -- same role, or with pg_read_all_stats): a hint, not proof
  select count(*) into v_listeners from pg_stat_activity
  where query ~* '^\s*listen\s+"?quickjs_runs"?';
  select count(*), min(coalesce(wake_at, run_at)) into v_waiting, v_oldest from quickjs.runs
  where (status = 'queued' and run_at < p_now - make_interval(secs => p_after_seconds))
     or (status = 'suspended' and wake_at < p_now - make_interval(secs => p_after_seconds));

  if v_mode = 'pg_net' and not v_pg_net then
    v_problems := v_problems || 'dispatch = pg_net but pg_net is not installed: runs are announced by NOTIFY only'::text;
  end if;
  if v_mode = 'pg_net' and v_url is null then
    v_problems := v_problems || 'dispatch = pg_net but settings has no function_url: runs are announced by NOTIFY only'::text;
  end if;
  if v_mode = 'pg_net' and v_pg_net and v_url is not null and not v_key then
    v_problems := v_problems || 'dispatch = pg_net but no key (Vault secret quickjs_service_role_key or settings service_role_key): the function refuses the requests'::text;
  end if;
  if v_waiting > 0 then
    v_problems := v_problems || format(
      '%s run(s) runnable for more than %s s (the oldest since %s): nothing executes them; %s',
      v_waiting, p_after_seconds, v_oldest,
      case
        when v_mode = 'pg_net' then 'check net._http_response for the function''s answers'
        when v_tick is null and v_mode = 'none' then 'dispatch = none needs a polling worker (deno task worker) or the tick (pg_cron, POST /tick)'
        when v_mode = 'none' then 'dispatch = none: the tick wakes runs but announces them to nobody; run deno task worker, or set dispatch = pg_net'
        else 'dispatch = notify needs a listening worker (deno task worker); with Supabase alone set dispatch = pg_net'
      end);
  end if;
  return jsonb_build_object(
    'mode', v_mode, 'pgNet', v_pg_net, 'functionUrl', v_url, 'key', v_key, 'tick', v_tick,
    'listeners', v_listeners, 'waiting', v_waiting, 'oldestSince', v_oldest,
    'afterSeconds', p_after_seconds, 'problems', to_jsonb(v_problems));
end $$;
comment on function quickjs.dispatch_health is
  'Whether ready runs reach an executor: dispatch settings and what they need, the pg_cron tick, '
  'listening workers (a hint), and runs runnable for more than p_after_seconds (problems lists why '
  'nothing runs them). diagnose-vm-state dispatch shows it.';
