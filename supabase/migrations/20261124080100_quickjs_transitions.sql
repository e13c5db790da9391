-- Durable QuickJS tasks, 2 of 5: the run state machine.
--
-- Every state transition is one SQL function, run in one transaction, guarded by the
-- lease's fencing token: a worker whose lease was taken over cannot write over newer
-- state. Time is a parameter (p_now, default now()) so tests can move the clock. Each
-- kind of change is written once and shared: a task is looked up by require_task, a lost
-- lease is handled by lose_lease, a suspended run is queued by wake_run, a run ends by
-- finish_run, a journal entry that no longer matches the task is replaced by claim_seq.
-- Errors are raised with quickjs.raise_error only.

-- ---- JSON views of rows ------------------------------------------------------------------

-- Drops the null fields of an object, one level deep: JSON nulls inside user data stay.
create function quickjs.strip_top_nulls(j jsonb) returns jsonb language sql immutable as $$
  select coalesce(jsonb_object_agg(key, value), '{}') from jsonb_each(j) where value <> 'null'
$$;
comment on function quickjs.strip_top_nulls is 'Drops null fields of an object, one level deep.';

create function quickjs.run_json(r quickjs.runs) returns jsonb language sql stable as $$
  select quickjs.strip_top_nulls(jsonb_build_object(
    'id', r.id, 'task', r.task_name, 'taskId', r.task_id, 'taskVersion', r.task_version,
    'status', r.status, 'input', r.input, 'result', r.result, 'error', r.error,
    'attempts', r.attempts, 'invocations', r.invocations, 'suspensions', r.suspensions,
    'wakeAt', r.wake_at,
    'leaseExpirations', r.lease_expirations,
    'waitingOn', r.waiting_on, 'parentRunId', r.parent_run_id, 'parentCallSeq', r.parent_call_seq,
    'ownerId', r.owner_id, 'idempotencyKey', r.idempotency_key, 'leaseOwner', r.lease_owner,
    'leaseExpiresAt', r.lease_expires_at, 'createdAt', r.created_at, 'updatedAt', r.updated_at,
    'startedAt', r.started_at, 'finishedAt', r.finished_at,
    -- the input's and the result's keys in their order (jsonb sorts them; the store reads these)
    'inputText', r.input_text,
    'resultText', case when r.status = 'completed' then r.result_text end))
    -- a completed run's result may be JSON null, and so may any input: keep those keys
    || case when r.status = 'completed' then jsonb_build_object('result', r.result) else '{}' end
    || jsonb_build_object('input', r.input)
$$;
comment on function quickjs.run_json is 'A run as the API shows it (camelCase).';

create function quickjs.call_json(c quickjs.calls) returns jsonb language sql stable as $$
  select quickjs.strip_top_nulls(jsonb_build_object(
    'seq', c.seq, 'service', c.service, 'path', to_jsonb(c.method_path), 'args', c.args,
    'mode', c.mode, 'status', c.status, 'error', c.error, 'attempts', c.attempts,
    'idempotencyKey', c.idempotency_key, 'wakeAt', c.wake_at, 'childRunId', c.child_run_id,
    'createdAt', c.created_at, 'startedAt', c.started_at, 'completedAt', c.completed_at,
    'deadlineAt', c.deadline_at,
    -- sent, waiting for its completion: a restored VM must not send it again
    'awaiting', case when c.completion_sent_at is not null and c.completed_at is null
                     then true end))
    || case when c.status = 'succeeded' then jsonb_build_object('result', c.result) else '{}' end
    || case when c.status = 'succeeded' and c.result_text is not null
         then jsonb_build_object('resultText', c.result_text) else '{}' end
$$;
comment on function quickjs.call_json is 'A journal entry as the API and the engine see it (camelCase).';

-- ---- shared steps ------------------------------------------------------------------------

-- Locks a run and checks the caller still holds its lease.
create function quickjs.lock_leased_run(p_run_id uuid, p_token bigint) returns quickjs.runs
language plpgsql as $$
declare
  r quickjs.runs;
begin
  select * into r from quickjs.runs where id = p_run_id for update;
  if not found then
    perform quickjs.raise_error('RUN_NOT_FOUND', format('run %s does not exist', p_run_id), 'QJ404');
  end if;
  if r.status <> 'running' or r.fencing_token is distinct from p_token then
    perform quickjs.raise_error('STALE_LEASE', format(
      'run %s is no longer leased with token %s (status %s, token %s)',
      p_run_id, p_token, r.status, r.fencing_token), 'QJ409');
  end if;
  return r;
end $$;
comment on function quickjs.lock_leased_run is 'Fencing: refuses a worker whose lease was taken over.';

-- The journal entry of a run's call, or CALL_NOT_FOUND.
create function quickjs.require_call(p_run_id uuid, p_seq int) returns quickjs.calls
language plpgsql as $$
declare
  c quickjs.calls;
begin
  select * into c from quickjs.calls where run_id = p_run_id and seq = p_seq;
  if not found then
    perform quickjs.raise_error('CALL_NOT_FOUND', format('run %s has no call %s', p_run_id, p_seq), 'QJ404');
  end if;
  return c;
end $$;
comment on function quickjs.require_call is 'The journal entry of call p_seq of a run; CALL_NOT_FOUND if none.';

create function quickjs.append_logs(p_run_id uuid, p_attempt int, p_logs jsonb) returns void
language sql as $$
  insert into quickjs.run_logs (run_id, attempt, invocation, level, message, logged_at)
  select p_run_id, p_attempt, (select invocations from quickjs.runs where id = p_run_id),
         coalesce(l ->> 'level', 'log'), coalesce(l ->> 'message', ''),
         coalesce(to_timestamp((l ->> 'at')::double precision / 1000), now())
  from jsonb_array_elements(coalesce(p_logs, '[]')) as l
$$;
comment on function quickjs.append_logs is
  'Inserts console lines [{level, message, at (ms)}] for a run (no lease check; internal).';

create function quickjs.system_log(r quickjs.runs, p_message text, p_now timestamptz)
returns void language sql as $$
  select quickjs.append_logs(r.id, r.attempts, jsonb_build_array(jsonb_build_object(
    'level', 'system', 'message', p_message, 'at', extract(epoch from p_now) * 1000)))
$$;
comment on function quickjs.system_log is 'Appends one of the executor''s own notes (level system) to a run''s log.';

-- The calls a suspended (or since woken) run's VM is parked on: suspend_run stores them in
-- waiting_on, beside the snapshot, in the same transaction.
create function quickjs.parked_calls(r quickjs.runs) returns int[] language sql immutable as $$
  select array(select jsonb_array_elements_text(coalesce(r.waiting_on -> 'calls', '[]'))::int)
$$;
comment on function quickjs.parked_calls is 'The call ids a run''s saved VM is parked on (waiting_on.calls).';

-- A task by id or by name, if it has a published version; the one place a task is looked up.
create function quickjs.find_task(p_name text, p_id uuid default null) returns quickjs.tasks
language sql stable as $$
  select * from quickjs.tasks t
  where (case when p_id is not null then t.id = p_id else t.name = p_name end)
    and t.latest_version > 0
$$;
comment on function quickjs.find_task is
  'The task with id p_id (or else name p_name) that has a published version, or a null row.';

create function quickjs.require_task(p_name text, p_id uuid default null) returns quickjs.tasks
language plpgsql stable as $$
declare
  t quickjs.tasks := quickjs.find_task(p_name, p_id);
begin
  if t.id is null then
    perform quickjs.raise_error('TASK_NOT_FOUND',
      format('task %s does not exist', coalesce(p_id::text, p_name)), 'QJ404');
  end if;
  return t;
end $$;
comment on function quickjs.require_task is 'find_task, or TASK_NOT_FOUND.';

-- A run is given up as lost after this many leases expired in a row without the worker
-- reporting back: 5 x the 30 s default lease is 2.5 minutes of a crash loop (a task that
-- runs the worker out of memory every time), and suspend_run resets the count, so a long
-- run that makes progress is never failed by it.
create function quickjs.max_lease_expirations() returns int language sql immutable as $$
  select 5
$$;
comment on function quickjs.max_lease_expirations is
  'Lost leases in a row after which a run fails with RUN_LEASE_EXPIRED (5).';

-- Every run ends here, whatever ends it: final status, no lease, no snapshot (it held the
-- task's heap), and the parent told. The caller holds the run's row lock.
create function quickjs.finish_run(
  r quickjs.runs, p_status quickjs.run_status, p_result jsonb, p_error jsonb, p_now timestamptz)
returns quickjs.runs language plpgsql as $$
begin
  update quickjs.runs set status = p_status, result = p_result, error = p_error,
    lease_owner = null, lease_expires_at = null, wake_at = null, waiting_on = null,
    finished_at = p_now, updated_at = p_now
  where id = r.id returning * into r;
  delete from quickjs.snapshots where run_id = r.id;
  perform quickjs.notify_parent(r, p_now);
  return r;
end $$;
comment on function quickjs.finish_run is
  'Ends a run (completed, failed or cancelled): drops lease and snapshot, settles the parent''s call.';

-- Every lost lease is handled here (the lease sweep and repair_run): the run goes back to
-- the queue, counted, or fails once it was lost max_lease_expirations() times in a row.
-- The caller holds the run's row lock.
create function quickjs.lose_lease(
  r quickjs.runs, p_now timestamptz, p_max_expirations int default null)
returns quickjs.runs language plpgsql as $$
begin
  update quickjs.runs set lease_expirations = lease_expirations + 1 where id = r.id
  returning * into r;
  if r.lease_expirations >= coalesce(p_max_expirations, quickjs.max_lease_expirations()) then
    return quickjs.finish_run(r, 'failed', null,
      jsonb_build_object('code', 'RUN_LEASE_EXPIRED', 'name', 'LeaseExpired',
        'message', format('the run''s worker stopped %s times without reporting back '
          '(crash, platform timeout or out of memory)', r.lease_expirations)),
      p_now);
  end if;
  perform quickjs.system_log(r, format('lease of %s expired; run requeued', r.lease_owner), p_now);
  update quickjs.runs set status = 'queued', run_at = p_now, lease_owner = null,
    lease_expires_at = null, updated_at = p_now
  where id = r.id returning * into r;
  return r;
end $$;
comment on function quickjs.lose_lease is
  'A run whose worker vanished: requeued and counted, or failed with RUN_LEASE_EXPIRED after '
  'max_lease_expirations() in a row.';

-- Every suspended run that can continue is queued here (a child ended, a repair, the tick);
-- the runs_dispatch trigger announces it.
create function quickjs.wake_run(p_run_id uuid, p_now timestamptz) returns quickjs.runs
language sql as $$
  update quickjs.runs set status = 'queued', run_at = p_now, wake_at = null, updated_at = p_now
  where id = p_run_id and status = 'suspended'
  returning *
$$;
comment on function quickjs.wake_run is 'Queues a suspended run now (null if it is not suspended).';

-- ---- tasks --------------------------------------------------------------------------------

create function quickjs.publish_task(
  p_name text, p_code text, p_description text default null, p_limits jsonb default '{}',
  p_allowed_tools text[] default null, p_retry jsonb default null)
returns jsonb language plpgsql as $$
declare
  t quickjs.tasks;
  v quickjs.task_versions;
  v_sha text := encode(sha256(convert_to(p_code, 'UTF8')), 'hex');
  v_changed boolean := false;
begin
  insert into quickjs.tasks (name, description) values (p_name, p_description)
  on conflict (name) do update set
    description = coalesce(excluded.description, quickjs.tasks.description), updated_at = now()
  returning * into t;
  select * into v from quickjs.task_versions where task_id = t.id and version = t.latest_version;
  if not found or v.code_sha256 <> v_sha or v.limits <> coalesce(p_limits, '{}')
     or v.allowed_tools is distinct from p_allowed_tools or v.retry is distinct from p_retry then
    insert into quickjs.task_versions (task_id, version, code, code_sha256, limits, allowed_tools,
                                       retry)
    values (t.id, t.latest_version + 1, p_code, v_sha, coalesce(p_limits, '{}'), p_allowed_tools,
            p_retry)
    returning * into v;
    update quickjs.tasks set latest_version = v.version, updated_at = now() where id = t.id;
    v_changed := true;
  end if;
  return jsonb_build_object('id', t.id, 'name', t.name, 'version', v.version,
    'changed', v_changed, 'codeSha256', v.code_sha256);
end $$;
comment on function quickjs.publish_task is
  'Creates or updates a task; a new version only when code, limits, allowed tools or retry change.';

-- Fills in the task of a run inserted by plain SQL: insert into quickjs.runs (task_name, input).
create function quickjs.runs_before_insert() returns trigger language plpgsql as $$
declare
  t quickjs.tasks := quickjs.require_task(new.task_name, new.task_id);
begin
  new.task_id := t.id;
  new.task_name := t.name;
  new.task_version := coalesce(new.task_version, t.latest_version);
  return new;
end $$;
comment on function quickjs.runs_before_insert is
  'Trigger: fills in task_id, task_name and task_version of a run inserted by plain SQL.';
create trigger runs_before_insert before insert on quickjs.runs
  for each row execute function quickjs.runs_before_insert();
comment on trigger runs_before_insert on quickjs.runs is 'See quickjs.runs_before_insert().';

-- A value changed by plain SQL (update quickjs.kv set value = …) must not be read back as the
-- text of the one before it: the text goes unless the same statement wrote a new one.
create function quickjs.kv_before_update() returns trigger language plpgsql as $$
begin
  if new.value is distinct from old.value and new.value_text is not distinct from old.value_text then
    new.value_text := null;
  end if;
  return new;
end $$;
comment on function quickjs.kv_before_update is
  'Trigger: drops value_text (the key order of a task''s value) when value changes without it.';
create trigger kv_before_update before update on quickjs.kv
  for each row execute function quickjs.kv_before_update();
comment on trigger kv_before_update on quickjs.kv is 'See quickjs.kv_before_update().';

-- ---- enqueue, claim, heartbeat ------------------------------------------------------------

create function quickjs.enqueue_run(
  p_task text default null, p_task_id uuid default null, p_input jsonb default 'null',
  p_idempotency_key text default null, p_owner_id uuid default null,
  p_run_at timestamptz default null, p_now timestamptz default now(),
  p_announce boolean default true, p_input_text text default null)
returns jsonb language plpgsql as $$
declare
  t quickjs.tasks := quickjs.require_task(p_task, p_task_id);
  r quickjs.runs;
begin
  -- p_announce false: the caller executes the run itself right away (POST /runs), so the
  -- dispatch trigger must not send it to a worker or the function as well
  perform set_config('quickjs.announce', case when p_announce then 'on' else 'off' end, true);
  insert into quickjs.runs (task_id, task_name, input, input_text, idempotency_key, owner_id,
                            run_at, created_at, updated_at)
  values (t.id, t.name, coalesce(p_input, 'null'), p_input_text, p_idempotency_key, p_owner_id,
          coalesce(p_run_at, p_now), p_now, p_now)
  on conflict (task_id, coalesce(owner_id, '00000000-0000-0000-0000-000000000000'::uuid), idempotency_key)
    where idempotency_key is not null do nothing
  returning * into r;
  perform set_config('quickjs.announce', 'on', true);
  if r.id is null then
    -- only a key can conflict (a null key never does), and only with the same owner's run:
    -- keys are unique per (task, owner), so another user's run is never found nor named
    select * into r from quickjs.runs where task_id = t.id and idempotency_key = p_idempotency_key
      and owner_id is not distinct from p_owner_id;
    if r.input is distinct from coalesce(p_input, 'null') then
      perform quickjs.raise_error('IDEMPOTENCY_CONFLICT', format(
        'idempotency key %s was used for run %s with a different input', p_idempotency_key, r.id),
        'QJ409');
    end if;
    return quickjs.run_json(r) || '{"created": false}';
  end if;
  return quickjs.run_json(r) || '{"created": true}';
end $$;
comment on function quickjs.enqueue_run is
  'Creates a queued run of the task''s latest version; the same idempotency key and input return the '
  'same run. Keys are the owner''s own: another owner''s equal key is another run. '
  'p_announce false: not dispatched (the caller runs it at once; the tick announces it if that fails). '
  'p_input_text: the input''s JSON text when jsonb would reorder its keys (runs.input_text).';

-- A claimed run as the engine needs it: code, limits, and the journal entries that matter
-- on resume (the parked calls and everything after the snapshot). The snapshot's bytes
-- travel beside it, as bytea (claim_runs).
create function quickjs.claim_json(r quickjs.runs) returns jsonb language sql stable as $$
  select quickjs.run_json(r) || jsonb_build_object(
    'fencingToken', r.fencing_token,
    'code', v.code, 'limits', v.limits, 'allowedTools', to_jsonb(v.allowed_tools),
    'calls', coalesce((
      select jsonb_agg(quickjs.call_json(c) order by c.seq) from quickjs.calls c
      where c.run_id = r.id
        and (s.run_id is null or c.seq > s.last_call_id or c.seq = any (quickjs.parked_calls(r)))),
      '[]'))
  from quickjs.task_versions v
  left join quickjs.snapshots s on s.run_id = r.id
  where v.task_id = r.task_id and v.version = r.task_version
$$;
comment on function quickjs.claim_json is
  'A claimed run for the engine: code, limits and the journal entries that matter on resume.';

create function quickjs.requeue_expired_leases(
  p_now timestamptz default now(), p_max_expirations int default quickjs.max_lease_expirations())
returns int language plpgsql as $$
declare
  r quickjs.runs;
  n int := 0;
begin
  for r in
    select * from quickjs.runs where status = 'running' and lease_expires_at < p_now
    for update skip locked
  loop
    n := n + 1;
    perform quickjs.lose_lease(r, p_now, p_max_expirations);
  end loop;
  return n;
end $$;
comment on function quickjs.requeue_expired_leases is
  'Gives runs whose worker vanished to another worker (lose_lease); fails them after '
  'p_max_expirations.';

create function quickjs.claim_runs(
  p_worker text, p_limit int default 1, p_lease_seconds int default 30,
  p_run_id uuid default null, p_now timestamptz default now())
returns table (run jsonb, snapshot bytea) language plpgsql as $$
declare
  -- p_now usually comes from a JavaScript clock (milliseconds) while run_at may come from
  -- now() (microseconds): a run enqueued in the same millisecond is due too
  v_due timestamptz := p_now + interval '999 microseconds';
begin
  perform quickjs.requeue_expired_leases(p_now);
  return query
  with picked as (
    select r.id from quickjs.runs r
    where (p_run_id is null or r.id = p_run_id)
      and ((r.status = 'queued' and r.run_at <= v_due)
        or (r.status = 'suspended' and r.wake_at <= v_due))
    order by coalesce(r.wake_at, r.run_at), r.created_at
    limit greatest(p_limit, 1)
    for update skip locked
  ), claimed as (
    update quickjs.runs r set
      status = 'running', lease_owner = p_worker,
      lease_expires_at = p_now + make_interval(secs => p_lease_seconds),
      fencing_token = nextval('quickjs.fencing_tokens'), invocations = r.invocations + 1,
      started_at = coalesce(r.started_at, p_now), wake_at = null, updated_at = p_now
    from picked where r.id = picked.id
    returning r.*
  )
  select quickjs.claim_json(c), s.bytes
  from claimed c left join quickjs.snapshots s on s.run_id = c.id;
end $$;
comment on function quickjs.claim_runs is
  'Leases up to p_limit due runs (queued, or suspended past wake_at) with a new fencing token: '
  'one row each, the run (claim_json) and its snapshot bytes (null on a first run).';

create function quickjs.heartbeat(
  p_run_id uuid, p_token bigint, p_lease_seconds int default 30, p_now timestamptz default now())
returns jsonb language plpgsql as $$
declare
  r quickjs.runs := quickjs.lock_leased_run(p_run_id, p_token);
begin
  update quickjs.runs set lease_expires_at = p_now + make_interval(secs => p_lease_seconds),
    updated_at = p_now
  where id = r.id returning * into r;
  return jsonb_build_object('leaseExpiresAt', r.lease_expires_at);
end $$;
comment on function quickjs.heartbeat is 'Extends the lease of a run the caller holds.';

-- ---- the journal --------------------------------------------------------------------------

-- The one rule for a journal entry at a sequence number: if it is the same call (service,
-- method path, arguments) it is returned locked, as it is; if it is a different call, the
-- task took another path than before a crash, so the old entry is deleted, the change is
-- logged, and the new call gets an idempotency key of its own (a service that deduplicates
-- must not answer it with the old result). Returns the entry (or a null row) and the key a
-- new entry takes.
create function quickjs.claim_seq(
  r quickjs.runs, p_seq int, p_service text, p_method_path text[], p_args jsonb,
  p_now timestamptz, out journaled quickjs.calls, out new_key text)
language plpgsql as $$
begin
  select * into journaled from quickjs.calls where run_id = r.id and seq = p_seq for update;
  -- a later attempt of the run (@retry) makes new calls: keys of their own, or a service that
  -- deduplicates would answer them with the failed attempt's results
  new_key := r.id || ':' || p_seq || case when r.attempts > 1 then ':a' || r.attempts else '' end;
  if not found then
    journaled := null;
  elsif journaled.service <> p_service or journaled.method_path <> p_method_path
        or journaled.args <> p_args then
    delete from quickjs.calls where run_id = r.id and seq = p_seq;
    perform quickjs.system_log(r, format(
      'call %s is now %s.%s; the journal had %s.%s from an earlier attempt', p_seq, p_service,
      array_to_string(p_method_path, '.'), journaled.service,
      array_to_string(journaled.method_path, '.')), p_now);
    new_key := new_key || ':' || left(md5(
      p_service || ':' || array_to_string(p_method_path, '.') || ':' || p_args::text), 8);
    journaled := null;
  end if;
end $$;
comment on function quickjs.claim_seq is
  'The journal entry at p_seq if it is this call; a different one is replaced (deleted, logged, '
  'and the new call gets its own idempotency key).';

create function quickjs.record_call(
  p_run_id uuid, p_token bigint, p_seq int, p_service text, p_method_path text[], p_args jsonb,
  p_mode text, p_wake_at timestamptz default null, p_now timestamptz default now())
returns jsonb language plpgsql as $$
declare
  r quickjs.runs := quickjs.lock_leased_run(p_run_id, p_token);
  j record := quickjs.claim_seq(r, p_seq, p_service, p_method_path, p_args, p_now);
  c quickjs.calls := j.journaled;
begin
  if c.run_id is not null then
    if c.status in ('succeeded', 'failed') then
      return quickjs.call_json(c) || '{"replayed": true}';
    end if;
    if c.status = 'pending' and c.error is not null and c.wake_at > p_now then
      -- a failed attempt waiting for its retry (retry_call): not due yet, so not started
      -- (a worker that crashed during the backoff must not send the next attempt early)
      return quickjs.call_json(c) || '{"replayed": false}';
    end if;
    if p_mode = 'inline' then
      -- in flight when a worker died, or cut off by a suspension: run it again, same key
      update quickjs.calls set status = 'started', mode = 'inline', attempts = attempts + 1,
        started_at = p_now
      where run_id = r.id and seq = p_seq returning * into c;
    end if;
    return quickjs.call_json(c) || '{"replayed": false}';
  end if;
  insert into quickjs.calls (run_id, seq, service, method_path, args, mode, status, attempts,
                             idempotency_key, wake_at, created_at, started_at)
  values (r.id, p_seq, p_service, p_method_path, p_args, p_mode,
          case when p_mode = 'inline' then 'started' else 'pending' end::quickjs.call_status,
          case when p_mode = 'inline' then 1 else 0 end,
          j.new_key, p_wake_at, p_now,
          case when p_mode = 'inline' then p_now end)
  returning * into c;
  return quickjs.call_json(c) || '{"replayed": false}';
end $$;
comment on function quickjs.record_call is
  'Journals a host call before it runs. A settled call comes back with replayed = true and is '
  'not executed again; an unsettled one is (re)started with the same idempotency key.';

create function quickjs.settle_call(
  p_run_id uuid, p_token bigint, p_seq int, p_ok boolean, p_result jsonb default null,
  p_error jsonb default null, p_logs jsonb default '[]', p_now timestamptz default now(),
  p_result_text text default null)
returns jsonb language plpgsql as $$
declare
  r quickjs.runs := quickjs.lock_leased_run(p_run_id, p_token);
  c quickjs.calls;
begin
  update quickjs.calls set
    status = case when p_ok then 'succeeded' else 'failed' end::quickjs.call_status,
    result = case when p_ok then coalesce(p_result, 'null') end,
    result_text = case when p_ok then p_result_text end,
    error = case when p_ok then null else p_error end,
    completed_at = p_now
  where run_id = r.id and seq = p_seq and status not in ('succeeded', 'failed')
  returning * into c;
  if not found then
    c := quickjs.require_call(r.id, p_seq); -- left as it was, or CALL_NOT_FOUND
  end if;
  perform quickjs.append_logs(r.id, r.attempts, p_logs);
  return quickjs.call_json(c);
end $$;
comment on function quickjs.settle_call is 'Records a call''s outcome (once; later settles keep the first).';

-- A failed attempt of a call with a retry policy: the call goes back to pending with the
-- attempt's error and the next attempt's due time (wake_at), in one fenced transaction, so a
-- crash during the backoff neither repeats the failed attempt nor forgets it: the next
-- record_call starts attempt attempts + 1 with the same idempotency key.
create function quickjs.retry_call(
  p_run_id uuid, p_token bigint, p_seq int, p_error jsonb, p_wake_at timestamptz,
  p_logs jsonb default '[]', p_now timestamptz default now())
returns jsonb language plpgsql as $$
declare
  r quickjs.runs := quickjs.lock_leased_run(p_run_id, p_token);
  c quickjs.calls;
begin
  update quickjs.calls set status = 'pending', error = p_error, wake_at = p_wake_at
  where run_id = r.id and seq = p_seq and status = 'started'
  returning * into c;
  if not found then
    c := quickjs.require_call(r.id, p_seq); -- left as it was, or CALL_NOT_FOUND
  end if;
  perform quickjs.append_logs(r.id, r.attempts, p_logs);
  return quickjs.call_json(c);
end $$;
comment on function quickjs.retry_call is
  'A call''s attempt failed and will be retried at p_wake_at: pending again, its last error kept, '
  'attempts unchanged (the next record_call counts the next attempt).';

create function quickjs.append_run_logs(p_run_id uuid, p_token bigint, p_logs jsonb)
returns void language plpgsql as $$
declare
  r quickjs.runs := quickjs.lock_leased_run(p_run_id, p_token);
begin
  perform quickjs.append_logs(r.id, r.attempts, p_logs);
end $$;
comment on function quickjs.append_run_logs is 'Appends console lines for a run the caller holds the lease of.';

-- ---- asynchronous calls -------------------------------------------------------------------
-- A service registered with completion = 'async' gets the call with a completion URL and a
-- one-call token, acknowledges it at once, and completes it later (POST
-- …/runs/:id/calls/:seq/complete, or quickjs.complete_call() in SQL), however long after;
-- the run waits suspended. The service's completion_timeout_ms fails it CALL_TIMEOUT. As
-- Temporal's asynchronous activity completion and Step Functions' task tokens.

create function quickjs.issue_completion(
  p_run_id uuid, p_token bigint, p_seq int, p_sha256 text, p_now timestamptz default now())
returns jsonb language plpgsql as $$
declare
  r quickjs.runs := quickjs.lock_leased_run(p_run_id, p_token);
  c quickjs.calls;
begin
  update quickjs.calls set completion_sha256 = p_sha256, completion_sent_at = null,
    deadline_at = null, started_at = coalesce(started_at, p_now)
  where run_id = r.id and seq = p_seq and completed_at is null
  returning * into c;
  if not found then
    c := quickjs.require_call(r.id, p_seq); -- left as it was, or CALL_NOT_FOUND
  end if;
  return quickjs.call_json(c);
end $$;
comment on function quickjs.issue_completion is
  'Before an asynchronous call is sent (again): keeps the hash of the token it carries, so that '
  'a completion racing the acknowledgement is accepted, and an earlier send''s token is not.';

create function quickjs.completion_sent(
  p_run_id uuid, p_token bigint, p_seq int, p_deadline_at timestamptz,
  p_now timestamptz default now())
returns jsonb language plpgsql as $$
declare
  r quickjs.runs := quickjs.lock_leased_run(p_run_id, p_token);
  c quickjs.calls;
begin
  update quickjs.calls set completion_sent_at = p_now, deadline_at = p_deadline_at
  where run_id = r.id and seq = p_seq and completed_at is null
  returning * into c;
  if not found then
    c := quickjs.require_call(r.id, p_seq); -- left as it was, or CALL_NOT_FOUND
  end if;
  return quickjs.call_json(c);
end $$;
comment on function quickjs.completion_sent is
  'The service acknowledged an asynchronous call: it now waits for its completion until '
  'p_deadline_at (returns the entry, settled already if the completion came first).';

create function quickjs.complete_call(
  p_run_id uuid, p_seq int, p_completion_token text, p_ok boolean, p_result jsonb default null,
  p_error jsonb default null, p_now timestamptz default now())
returns jsonb language plpgsql as $$
declare
  c quickjs.calls;
  v_error jsonb;
begin
  select * into c from quickjs.calls where run_id = p_run_id and seq = p_seq for update;
  if not found then
    perform quickjs.raise_error('CALL_NOT_FOUND',
      format('run %s has no call %s', p_run_id, p_seq), 'QJ404');
  end if;
  if c.completion_sha256 is null
     or c.completion_sha256 <> encode(sha256(convert_to(coalesce(p_completion_token, ''), 'UTF8')), 'hex') then
    perform quickjs.raise_error('COMPLETION_REFUSED', format(
      'call %s of run %s does not take this completion token (not an asynchronous call, or '
      're-sent since with a new token)', p_seq, p_run_id), 'QJ403');
  end if;
  -- a completion delivered twice (the service retried its POST) changes nothing
  if c.completed_at is not null then
    return quickjs.call_json(c) || jsonb_build_object('alreadyCompleted', true);
  end if;
  if not p_ok and p_error ? '$sealed' then
    v_error := p_error; -- sealed by the engine (journal_seal.ts), in the shape below
  elsif not p_ok then
    v_error := jsonb_build_object('name', 'ServiceError',
      'code', coalesce(p_error ->> 'code', 'SERVICE_ERROR'),
      'message', coalesce(p_error ->> 'message', format('%s failed', c.service)))
      || case when p_error ? 'data' then jsonb_build_object('data', p_error -> 'data') else '{}' end;
  end if;
  update quickjs.calls set
    status = case when p_ok then 'succeeded' else 'failed' end::quickjs.call_status,
    result = case when p_ok then coalesce(p_result, 'null') end,
    error = v_error, completed_at = p_now
  where run_id = c.run_id and seq = c.seq returning * into c;
  -- the run waits suspended on it: continue it now (a running one sees the settled call
  -- when it suspends, and continues at once)
  perform quickjs.wake_run(r.id, p_now) from quickjs.runs r
  where r.id = c.run_id and r.status = 'suspended' and c.seq = any (quickjs.parked_calls(r));
  return quickjs.call_json(c) || jsonb_build_object('alreadyCompleted', false);
end $$;
comment on function quickjs.complete_call is
  'Completes an asynchronous call with its result (p_ok) or error ({code, message, data}), '
  'given the token it was sent with; wakes the run. Completing a completed call is a no-op.';

create function quickjs.expire_completions(p_now timestamptz default now())
returns int language plpgsql as $$
declare
  v_count int := 0;
  c quickjs.calls;
begin
  for c in
    update quickjs.calls set status = 'failed', completed_at = p_now,
      error = jsonb_build_object('name', 'ToolError', 'code', 'CALL_TIMEOUT', 'message', format(
        '%s.%s: no completion by its deadline (%s)', service, array_to_string(method_path, '.'),
        deadline_at))
    where deadline_at <= p_now and completed_at is null and completion_sent_at is not null
    returning *
  loop
    v_count := v_count + 1;
    perform quickjs.wake_run(r.id, p_now) from quickjs.runs r
    where r.id = c.run_id and r.status = 'suspended';
  end loop;
  return v_count;
end $$;
comment on function quickjs.expire_completions is
  'Fails CALL_TIMEOUT the asynchronous calls whose deadline passed, and wakes their runs (tick).';

-- ---- child runs ---------------------------------------------------------------------------

create function quickjs.start_child(
  p_run_id uuid, p_token bigint, p_seq int, p_task text, p_input jsonb,
  p_max_depth int default 16, p_now timestamptz default now(), p_input_text text default null)
returns jsonb language plpgsql as $$
declare
  r quickjs.runs := quickjs.lock_leased_run(p_run_id, p_token);
  v_args jsonb := jsonb_build_array(p_task, coalesce(p_input, 'null'));
  j record := quickjs.claim_seq(r, p_seq, 'tasks', '{execute}', v_args, p_now);
  c quickjs.calls := j.journaled;
  t quickjs.tasks;
  child quickjs.runs;
  v_error jsonb;
  v_root uuid := coalesce(r.root_run_id, r.id);
  v_max_children int;
  v_max_descendants int;
  v_count int;
begin
  if c.run_id is not null then
    return quickjs.call_json(c) || jsonb_build_object('replayed', c.status in ('succeeded', 'failed'));
  end if;
  t := quickjs.find_task(p_task);
  if t.id is null then
    v_error := jsonb_build_object('code', 'TASK_NOT_FOUND', 'name', 'TaskNotFound',
      'message', format('task %s does not exist', p_task));
  elsif r.depth + 1 > p_max_depth then
    v_error := jsonb_build_object('code', 'CHILD_DEPTH_EXCEEDED', 'name', 'ChildDepthExceeded',
      'message', format('child runs may nest %s deep', p_max_depth));
  end if;
  -- Fan-out: depth alone let a task that starts 8 children of itself make thousands of
  -- runs. Counted here, in the transaction that adds the child: the run is locked (its
  -- children are exact) and the tree's lock serializes the siblings of one root.
  if v_error is null then
    v_max_children := coalesce((select value::int from quickjs.settings
                                where key = 'max_children_per_run'), 100);
    v_max_descendants := coalesce((select value::int from quickjs.settings
                                   where key = 'max_descendants_per_root'), 1000);
    select count(*) into v_count from quickjs.runs where parent_run_id = r.id;
    if v_count >= v_max_children then
      v_error := jsonb_build_object('code', 'CHILD_LIMIT_EXCEEDED', 'name', 'ChildLimitExceeded',
        'message', format('a run may start %s child runs (max_children_per_run)', v_max_children));
    else
      perform pg_advisory_xact_lock(hashtextextended('quickjs.tree:' || v_root, 0));
      select count(*) into v_count from quickjs.runs where root_run_id = v_root;
      if v_count >= v_max_descendants then
        v_error := jsonb_build_object('code', 'DESCENDANT_LIMIT_EXCEEDED',
          'name', 'DescendantLimitExceeded', 'message', format(
            'a top run and its children may start %s runs in all (max_descendants_per_root)',
            v_max_descendants));
      end if;
    end if;
  end if;
  if v_error is not null then
    insert into quickjs.calls (run_id, seq, service, method_path, args, mode, status, error,
                               idempotency_key, created_at, completed_at)
    values (r.id, p_seq, 'tasks', '{execute}', v_args, 'durable', 'failed', v_error,
            j.new_key, p_now, p_now)
    returning * into c;
    return quickjs.call_json(c) || '{"replayed": false}';
  end if;
  insert into quickjs.runs (task_id, task_name, input, input_text, parent_run_id, parent_call_seq,
                            depth, root_run_id, owner_id, idempotency_key, run_at, created_at,
                            updated_at)
  values (t.id, t.name, coalesce(p_input, 'null'), p_input_text, r.id, p_seq, r.depth + 1, v_root,
          r.owner_id,
          'child-of:' || r.id || ':' || p_seq || ':' || md5(v_args::text), p_now, p_now, p_now)
  on conflict (task_id, coalesce(owner_id, '00000000-0000-0000-0000-000000000000'::uuid), idempotency_key)
    where idempotency_key is not null do update set updated_at = excluded.updated_at
  returning * into child;
  insert into quickjs.calls (run_id, seq, service, method_path, args, mode, status,
                             idempotency_key, child_run_id, created_at)
  values (r.id, p_seq, 'tasks', '{execute}', v_args, 'durable', 'pending',
          j.new_key, child.id, p_now)
  returning * into c;
  -- a child that already ended (a retry after a crash) settles the call at once
  if child.status in ('completed', 'failed', 'cancelled') then
    perform quickjs.settle_from_child(child, p_now);
    select * into c from quickjs.calls where run_id = r.id and seq = p_seq;
  end if;
  return quickjs.call_json(c) || '{"replayed": false}';
end $$;
comment on function quickjs.start_child is
  'tools.tasks.execute: journals the call and enqueues the child run in one transaction; refuses '
  'past the depth, children-per-run and descendants-per-root limits (settings). p_input_text: the '
  'input''s JSON text when jsonb would reorder its keys (runs.input_text).';

-- Settles the parent's call with a finished child's outcome (the parent row must be locked).
create function quickjs.settle_from_child(child quickjs.runs, p_now timestamptz)
returns void language sql as $$
  update quickjs.calls set
    status = case when child.status = 'completed' then 'succeeded' else 'failed' end::quickjs.call_status,
    result = case when child.status = 'completed' then coalesce(child.result, 'null') end,
    result_text = case when child.status = 'completed' then child.result_text end,
    error = case when child.status = 'completed' then null
      when child.status = 'cancelled' then jsonb_build_object('code', 'CHILD_CANCELLED',
        'name', 'ChildRunCancelled', 'message', format('child run %s (%s) was cancelled', child.id, child.task_name),
        'data', jsonb_build_object('runId', child.id))
      else jsonb_build_object('code', coalesce(child.error ->> 'code', 'CHILD_FAILED'),
        'name', coalesce(child.error ->> 'name', 'Error'),
        'message', coalesce(child.error ->> 'message', 'the child run failed'),
        'data', jsonb_build_object('runId', child.id, 'error', child.error)) end,
    completed_at = p_now
  where run_id = child.parent_run_id and seq = child.parent_call_seq
    and child_run_id = child.id and status not in ('succeeded', 'failed')
$$;
comment on function quickjs.settle_from_child is
  'Settles the parent''s call with a finished child''s outcome (caller locks the parent).';

-- A child ended: settle the parent's call and wake the parent if it sleeps.
create function quickjs.notify_parent(child quickjs.runs, p_now timestamptz)
returns void language plpgsql as $$
declare
  parent quickjs.runs;
begin
  if child.parent_run_id is null then
    return;
  end if;
  select * into parent from quickjs.runs where id = child.parent_run_id for update;
  if not found then
    return;
  end if;
  perform quickjs.settle_from_child(child, p_now);
  -- only if the call is still this child's (a crash and another path may have replaced it)
  if exists (
    select 1 from quickjs.calls where run_id = parent.id and seq = child.parent_call_seq
      and child_run_id = child.id and status in ('succeeded', 'failed')) then
    perform quickjs.wake_run(parent.id, p_now);
  end if;
end $$;
comment on function quickjs.notify_parent is
  'A child run ended: settles the parent''s call and wakes the parent if it is suspended.';

-- ---- suspending and finishing ------------------------------------------------------------

create function quickjs.suspend_run(
  p_run_id uuid, p_token bigint, p_snapshot bytea, p_format int, p_wasm_sha256 text,
  p_memory_bytes bigint, p_last_call_id int, p_wake_at timestamptz, p_waiting_on jsonb,
  p_logs jsonb default '[]', p_now timestamptz default now())
returns jsonb language plpgsql as $$
declare
  r quickjs.runs := quickjs.lock_leased_run(p_run_id, p_token);
  v_parked int[];
  v_ready boolean;
begin
  update quickjs.runs set waiting_on = p_waiting_on where id = r.id returning * into r;
  v_parked := quickjs.parked_calls(r);
  if cardinality(v_parked) = 0 then
    perform quickjs.raise_error('NOT_PARKED', 'a snapshot must list the calls the VM is parked on');
  end if;
  insert into quickjs.snapshots (run_id, bytes, format, wasm_sha256, memory_bytes, last_call_id,
                                 created_at)
  values (r.id, p_snapshot, p_format, p_wasm_sha256, p_memory_bytes, p_last_call_id, p_now)
  on conflict (run_id) do update set bytes = excluded.bytes, format = excluded.format,
    wasm_sha256 = excluded.wasm_sha256, memory_bytes = excluded.memory_bytes,
    last_call_id = excluded.last_call_id, created_at = excluded.created_at;
  -- a call that settled while the run was running (a child that ended meanwhile) or a wake
  -- time already passed: continue at once instead of sleeping
  v_ready := (p_wake_at is not null and p_wake_at <= p_now) or exists (
    select 1 from quickjs.calls where run_id = r.id and seq = any (v_parked)
      and status in ('succeeded', 'failed'));
  if not v_ready and p_wake_at is null and not (p_waiting_on ?| array['children', 'completions']) then
    perform quickjs.raise_error('NOT_WAKEABLE',
      'a run may only suspend with a wake time, a child run or a completion to wait for');
  end if;
  update quickjs.runs set
    status = case when v_ready then 'queued' else 'suspended' end::quickjs.run_status,
    run_at = case when v_ready then p_now else run_at end,
    wake_at = case when v_ready then null else p_wake_at end,
    suspensions = suspensions + 1,
    -- progress was saved: lost leases count again from zero
    lease_expirations = 0,
    lease_owner = null, lease_expires_at = null, updated_at = p_now
  where id = r.id returning * into r;
  perform quickjs.append_logs(r.id, r.attempts, p_logs);
  return quickjs.run_json(r);
end $$;
comment on function quickjs.suspend_run is
  'Stores the VM snapshot (bytes, and the columns derived from its header) and parks the run on '
  'p_waiting_on.calls until wake_at or a child run ends; queues it at once if what it waits for '
  'already happened.';

create function quickjs.complete_run(
  p_run_id uuid, p_token bigint, p_result jsonb, p_logs jsonb default '[]',
  p_now timestamptz default now(), p_result_text text default null)
returns jsonb language plpgsql as $$
declare
  r quickjs.runs := quickjs.lock_leased_run(p_run_id, p_token);
begin
  -- the text first: finish_run hands the row to the parent's call (settle_from_child)
  update quickjs.runs set result_text = p_result_text where id = r.id returning * into r;
  r := quickjs.finish_run(r, 'completed', coalesce(p_result, 'null'), null, p_now);
  perform quickjs.append_logs(r.id, r.attempts, p_logs);
  return quickjs.run_json(r);
end $$;
comment on function quickjs.complete_run is 'Final: stores the result, drops the snapshot, wakes the parent.';

-- A task-level retry (@retry): the failed attempt's error and journal move to run_attempts,
-- and the run is queued again, from its input, as attempt n + 1 after the backoff
-- (backoffMs × multiplier^(n-1)). Its snapshot is dropped (the next attempt is a fresh VM)
-- and its unfinished children are cancelled (their results belonged to the old attempt).
-- The caller holds the run's row lock.
create function quickjs.restart_run(
  r quickjs.runs, p_error jsonb, p_retry jsonb, p_now timestamptz)
returns quickjs.runs language plpgsql as $$
declare
  v_delay_ms double precision := coalesce((p_retry ->> 'backoffMs')::double precision, 0)
    * power(coalesce((p_retry ->> 'multiplier')::double precision, 1), r.attempts - 1);
  child_id uuid;
begin
  insert into quickjs.run_attempts (run_id, attempt, error, calls, invocations, started_at,
                                    ended_at)
  values (r.id, r.attempts, p_error, coalesce((
    select jsonb_agg(quickjs.call_json(c) order by c.seq) from quickjs.calls c
    where c.run_id = r.id), '[]'), r.invocations, r.started_at, p_now)
  on conflict (run_id, attempt) do nothing;
  delete from quickjs.calls where run_id = r.id;
  delete from quickjs.snapshots where run_id = r.id;
  for child_id in
    select id from quickjs.runs where parent_run_id = r.id
      and status not in ('completed', 'failed', 'cancelled')
  loop
    perform quickjs.cancel_run(child_id, 'the parent run''s attempt failed', null, p_now);
  end loop;
  update quickjs.runs set status = 'queued', attempts = r.attempts + 1, error = p_error,
    run_at = p_now + make_interval(secs => least(v_delay_ms, 86400000) / 1000),
    lease_owner = null, lease_expires_at = null, wake_at = null, waiting_on = null,
    -- started_at: the next claim stamps the new attempt's start (run_attempts keeps this one's)
    lease_expirations = 0, started_at = null, updated_at = p_now
  where id = r.id returning * into r;
  perform quickjs.system_log(r, format('attempt %s failed (%s); attempt %s of %s at %s',
    r.attempts - 1, coalesce(p_error ->> 'code', 'error'), r.attempts, p_retry ->> 'attempts',
    to_char(r.run_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')), p_now);
  return r;
end $$;
comment on function quickjs.restart_run is
  'Task-level retry: keeps the failed attempt in run_attempts and queues the run again from its '
  'input as the next attempt, after the @retry backoff.';

create function quickjs.fail_run(
  p_run_id uuid, p_token bigint, p_error jsonb, p_logs jsonb default '[]',
  p_now timestamptz default now())
returns jsonb language plpgsql as $$
declare
  r quickjs.runs := quickjs.lock_leased_run(p_run_id, p_token);
  v_retry jsonb;
begin
  perform quickjs.append_logs(r.id, r.attempts, p_logs);
  select v.retry into v_retry from quickjs.task_versions v
  where v.task_id = r.task_id and v.version = r.task_version;
  if v_retry is not null and r.attempts < (v_retry ->> 'attempts')::int
     and coalesce(p_error ->> 'code', '') not in ('TASK_SYNTAX', 'TASK_INVALID', 'TASK_NO_ENTRY',
       'SNAPSHOT_INCOMPATIBLE', 'SNAPSHOT_CORRUPT') then
    r := quickjs.restart_run(r, p_error, v_retry, p_now);
  else
    r := quickjs.finish_run(r, 'failed', null, p_error, p_now);
  end if;
  return quickjs.run_json(r);
end $$;
comment on function quickjs.fail_run is
  'The run failed: final (stores the error, drops the snapshot, wakes the parent), or, with '
  'attempts of its task''s @retry left, started again from its input (restart_run).';

create function quickjs.cancel_run(
  p_run_id uuid, p_reason text default null, p_owner_id uuid default null,
  p_now timestamptz default now())
returns jsonb language plpgsql as $$
declare
  r quickjs.runs;
  child_id uuid;
begin
  select * into r from quickjs.runs where id = p_run_id for update;
  if not found or (p_owner_id is not null and r.owner_id is distinct from p_owner_id) then
    perform quickjs.raise_error('RUN_NOT_FOUND', format('run %s does not exist', p_run_id), 'QJ404');
  end if;
  if r.status in ('completed', 'failed', 'cancelled') then
    return quickjs.run_json(r) || '{"cancelled": false}';
  end if;
  r := quickjs.finish_run(r, 'cancelled', null,
    jsonb_build_object('code', 'CANCELLED', 'name', 'Cancelled',
      'message', coalesce(p_reason, 'the run was cancelled')),
    p_now);
  for child_id in
    select id from quickjs.runs where parent_run_id = r.id
      and status not in ('completed', 'failed', 'cancelled')
  loop
    perform quickjs.cancel_run(child_id, 'the parent run was cancelled', null, p_now);
  end loop;
  return quickjs.run_json(r) || '{"cancelled": true}';
end $$;
comment on function quickjs.cancel_run is
  'Final: cancels a run and its unfinished children. A worker still running it is refused at its '
  'next transition.';

-- ---- reads --------------------------------------------------------------------------------

create function quickjs.get_run(
  p_run_id uuid, p_owner_id uuid default null, p_log_limit int default 1000)
returns jsonb language sql stable as $$
  select quickjs.run_json(r) || jsonb_build_object('logs', coalesce((
    select jsonb_agg(jsonb_build_object('level', l.level, 'message', l.message,
      'at', l.logged_at, 'attempt', l.attempt, 'invocation', l.invocation) order by l.id)
    from (select * from quickjs.run_logs where run_id = r.id order by id desc limit p_log_limit) l),
    '[]'))
    -- the attempts a task-level @retry ended (their journals are in run_attempts.calls)
    || coalesce((select jsonb_build_object('previousAttempts', jsonb_agg(jsonb_build_object(
         'attempt', a.attempt, 'error', a.error, 'invocations', a.invocations,
         'calls', jsonb_array_length(a.calls), 'startedAt', a.started_at, 'endedAt', a.ended_at)
         order by a.attempt))
       from quickjs.run_attempts a where a.run_id = r.id having count(*) > 0), '{}')
  from quickjs.runs r
  where r.id = p_run_id and (p_owner_id is null or r.owner_id = p_owner_id)
$$;
comment on function quickjs.get_run is 'A run with its last p_log_limit log lines, or null (also when it is not p_owner_id''s).';

create function quickjs.list_calls(p_run_id uuid) returns jsonb language sql stable as $$
  select coalesce(jsonb_agg(quickjs.call_json(c) order by c.seq), '[]')
  from quickjs.calls c where c.run_id = p_run_id
$$;
comment on function quickjs.list_calls is 'A run''s whole journal, in call order.';

create function quickjs.get_snapshot(p_run_id uuid) returns table (snapshot jsonb, bytes bytea)
language sql stable as $$
  select jsonb_build_object('runId', s.run_id, 'sizeBytes', s.size_bytes, 'format', s.format,
    'wasmSha256', s.wasm_sha256, 'memoryBytes', s.memory_bytes, 'lastCallId', s.last_call_id,
    'createdAt', s.created_at), s.bytes
  from quickjs.snapshots s where s.run_id = p_run_id
$$;
comment on function quickjs.get_snapshot is
  'A run''s snapshot: what the columns say of it (jsonb) and its bytes (no row: none).';

-- ---- kv and services (the tables behind tools.kv and tools.<service>) -------------------

create function quickjs.kv_get(p_key text) returns jsonb language sql stable as $$
  select coalesce(
    (select jsonb_build_object('found', true, 'value', value, 'secret', secret)
     from quickjs.kv where key = p_key),
    '{"found": false}')
$$;
comment on function quickjs.kv_get is 'tools.kv.get: {found, value, secret}.';

create function quickjs.kv_set(
  p_key text, p_value jsonb, p_secret boolean default false, p_value_text text default null)
returns void language sql as $$
  insert into quickjs.kv (key, value, secret, value_text)
  values (p_key, coalesce(p_value, 'null'), p_secret, case when not p_secret then p_value_text end)
  on conflict (key) do update set value = excluded.value, secret = excluded.secret,
    value_text = excluded.value_text, updated_at = now()
$$;
comment on function quickjs.kv_set is 'tools.kv.set: stores a value, secret or not.';

create function quickjs.kv_delete(p_key text) returns boolean language plpgsql as $$
begin
  delete from quickjs.kv where key = p_key;
  return found;
end $$;
comment on function quickjs.kv_delete is 'tools.kv.delete: true if the key existed.';

-- tools.kv as one journaled effect: the fence, the journal entry, the change and the outcome
-- commit in one transaction. A worker whose lease was taken over changes nothing (its
-- record_call raises STALE_LEASE before the change), and a kv call takes effect once: after
-- a crash its outcome comes from the journal (a secret read is read again: the journal keeps
-- only a marker). p_args is what the journal keeps (a secret write's value redacted).
create function quickjs.kv_call(
  p_run_id uuid, p_token bigint, p_seq int, p_op text, p_key text, p_value jsonb,
  p_secret boolean, p_args jsonb, p_logs jsonb default '[]', p_now timestamptz default now(),
  p_value_text text default null)
returns jsonb language plpgsql as $$
declare
  v_call jsonb := quickjs.record_call(p_run_id, p_token, p_seq, 'kv', array[p_op], p_args,
    'inline', null, p_now);
  v_result jsonb;
  -- a get's value as the task wrote it (key order), journaled with it (valueText: see kv)
  v_text text;
  v_secret boolean := false;
  k quickjs.kv;
begin
  if (v_call ->> 'replayed')::boolean
    and not (p_op = 'get' and v_call -> 'result' = '{"$secret": true}') then
    return jsonb_build_object('call', v_call, 'value', coalesce(v_call -> 'result', 'null'),
      'secret', false) || case when v_call ? 'resultText'
        then jsonb_build_object('valueText', v_call -> 'resultText') else '{}' end;
  end if;
  if p_op = 'get' then
    select * into k from quickjs.kv where key = p_key;
    v_result := case when found then k.value else 'null' end;
    v_text := k.value_text;
    v_secret := coalesce(k.secret, false);
  elsif p_op = 'set' then
    perform quickjs.kv_set(p_key, p_value, p_secret, p_value_text);
    v_result := 'null';
  else
    v_result := to_jsonb(quickjs.kv_delete(p_key));
  end if;
  v_call := quickjs.settle_call(p_run_id, p_token, p_seq, true,
    case when v_secret then '{"$secret": true}' else v_result end, null, p_logs, p_now,
    case when not v_secret then v_text end);
  return jsonb_build_object('call', v_call, 'value', v_result, 'secret', v_secret)
    || case when v_text is not null then jsonb_build_object('valueText', v_text) else '{}' end;
end $$;
comment on function quickjs.kv_call is
  'tools.kv.get/set/delete for a run: fenced by its lease, journaled and applied in one '
  'transaction, so a stale worker changes nothing and each call takes effect once.';

create function quickjs.get_service(p_name text) returns jsonb language sql stable as $$
  select quickjs.strip_top_nulls(jsonb_build_object('name', name, 'url', url,
    'headers', headers, 'timeoutMs', timeout_ms, 'retry', retry,
    'completion', completion, 'completionTimeoutMs', completion_timeout_ms))
  from quickjs.services where name = p_name
$$;
comment on function quickjs.get_service is 'The registered external service of that name, or null.';
