-- Operator tools for scripts/diagnose-vm-state.ts: repairing one stuck run (stuck --fix) and
-- a capacity view of the stored snapshots. What "stuck" means stays in find_stuck_runs; each
-- repair below answers one of its problems, in one transaction, with a note in the run's log.

create function quickjs.repair_run(p_run_id uuid, p_now timestamptz default now())
returns jsonb language plpgsql as $$
declare
  r quickjs.runs;
  -- the default of requeue_expired_leases: a run whose worker vanished this often fails
  v_max_expirations constant int := 5;
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
  select parked_calls into v_parked from quickjs.snapshots where run_id = r.id;
  v_has_snapshot := found;

  if r.status = 'running' and r.lease_expires_at < p_now then
    -- the worker vanished: what requeue_expired_leases does, for this run only
    if r.lease_expirations + 1 >= v_max_expirations then
      update quickjs.runs set status = 'failed', lease_expirations = lease_expirations + 1,
        error = jsonb_build_object('code', 'RUN_LEASE_EXPIRED', 'name', 'LeaseExpired',
          'message', format('the run''s worker stopped %s times without reporting back '
            '(crash, platform timeout or out of memory)', r.lease_expirations + 1)),
        lease_owner = null, lease_expires_at = null, wake_at = null, waiting_on = null,
        finished_at = p_now, updated_at = p_now
      where id = r.id returning * into r;
      delete from quickjs.snapshots where run_id = r.id;
      perform quickjs.notify_parent(r, p_now);
      v_action := 'failed';
      v_reason := format('its lease expired %s times; failed', r.lease_expirations);
    else
      v_reason := format('lease of %s expired at %s; requeued', r.lease_owner, r.lease_expires_at);
      update quickjs.runs set status = 'queued', run_at = p_now,
        lease_expirations = lease_expirations + 1, lease_owner = null, lease_expires_at = null,
        updated_at = p_now
      where id = r.id returning * into r;
      v_action := 'requeued';
    end if;

  elsif r.status = 'suspended' and not v_has_snapshot then
    -- its VM is gone: nothing can continue it, and waiting would never end
    v_reason := 'suspended without a VM snapshot: the run cannot be resumed';
    update quickjs.runs set status = 'failed', result = null,
      error = jsonb_build_object('code', 'RUN_UNRECOVERABLE', 'name', 'RunUnrecoverable',
        'message', 'the run was suspended but its VM snapshot is missing, so it cannot be '
          'resumed; failed by quickjs.repair_run'),
      lease_owner = null, lease_expires_at = null, wake_at = null, waiting_on = null,
      finished_at = p_now, updated_at = p_now
    where id = r.id returning * into r;
    perform quickjs.notify_parent(r, p_now);
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
      -- the runs_dispatch trigger announces it
      update quickjs.runs set status = 'queued', run_at = p_now, wake_at = null, updated_at = p_now
      where id = r.id returning * into r;
    end if;

  elsif r.status = 'queued' and r.run_at <= p_now then
    -- due, but its announcement was lost (worker down, pg_net failure): announce it again
    perform quickjs.dispatch(r.id);
    v_action := 'dispatched';
    v_reason := format('queued since %s; announced again', r.run_at);
  end if;

  if v_action <> 'none' then
    perform quickjs.append_logs(r.id, r.attempts, jsonb_build_array(jsonb_build_object(
      'level', 'system', 'at', extract(epoch from p_now) * 1000,
      'message', format('repair_run: %s (%s)', v_action, v_reason))));
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
          'status', r.status, 'sizeBytes', s.size_bytes,
          'memoryBytes', (s.header ->> 'memoryBytes')::bigint,
          'pageCount', (s.header ->> 'pageCount')::int, 'variant', s.variant,
          'packageVersion', s.package_version, 'createdAt', s.created_at)
        order by s.size_bytes desc, s.created_at)
      from (select * from quickjs.snapshots order by size_bytes desc, created_at
            limit greatest(p_limit, 0)) s
      join quickjs.runs r on r.id = s.run_id), '[]'))
$$;
comment on function quickjs.list_snapshots is
  'The p_limit largest snapshots (run, task, stored size, VM memory, created) and the count and '
  'total size of all of them: a capacity view for diagnose-vm-state.';

-- Functions are executable by PUBLIC when created; like the state machine (previous
-- migration), these are for the service side only.
revoke execute on function quickjs.repair_run(uuid, timestamptz) from public;
revoke execute on function quickjs.list_snapshots(int) from public;
do $$
begin
  if exists (select 1 from pg_roles where rolname = 'service_role') then
    grant execute on function quickjs.repair_run(uuid, timestamptz) to service_role;
    grant execute on function quickjs.list_snapshots(int) to service_role;
  end if;
end $$;
