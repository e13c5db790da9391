-- Durable QuickJS tasks, after the five: what a call goes through before it settles.
--
-- The failed attempts of a retried call stay in its journal entry (attempt_errors), not only
-- in the log, so the entry of a call that succeeded at its third attempt shows the two
-- before.
--
-- Heartbeats of asynchronous calls. A service that
-- works on a call for hours says it is alive (POST …/runs/:id/calls/:seq/heartbeat, or
-- quickjs.heartbeat_call() in SQL), with its progress; a service registered with
-- heartbeat_timeout_ms that stays silent longer fails the call HEARTBEAT_TIMEOUT at the next
-- tick, long before its completion deadline. As Temporal's activity heartbeats: the answer
-- tells the service whether to go on (the call still waits, its run is not over), and a call
-- sent again after a crash carries the last progress reported, so the work can continue from
-- there. Its own file, so the set above stays as it was; it grants what 5 of 5 grants, for the
-- functions it adds.

alter table quickjs.calls add column attempt_errors jsonb not null default '[]'
  check (jsonb_typeof(attempt_errors) = 'array');
comment on column quickjs.calls.attempt_errors is
  'A retried call''s failed attempts, in order: {attempt, at, error} (error sealed as the '
  'entry''s error is, when the journal is).';

create or replace function quickjs.retry_call(
  p_run_id uuid, p_token bigint, p_seq int, p_error jsonb, p_wake_at timestamptz,
  p_logs jsonb default '[]', p_now timestamptz default now())
returns jsonb language plpgsql as $$
declare
  r quickjs.runs := quickjs.lock_leased_run(p_run_id, p_token);
  c quickjs.calls;
begin
  update quickjs.calls set status = 'pending', error = p_error, wake_at = p_wake_at,
    attempt_errors = attempt_errors
      || jsonb_build_array(jsonb_build_object('attempt', attempts, 'at', p_now, 'error', p_error))
  where run_id = r.id and seq = p_seq and status = 'started'
  returning * into c;
  if not found then
    c := quickjs.require_call(r.id, p_seq); -- left as it was, or CALL_NOT_FOUND
  end if;
  perform quickjs.append_logs(r.id, r.attempts, p_logs);
  return quickjs.call_json(c);
end $$;

alter table quickjs.services add column heartbeat_timeout_ms bigint
  check (heartbeat_timeout_ms is null or heartbeat_timeout_ms between 1000 and 2592000000);
comment on column quickjs.services.heartbeat_timeout_ms is
  'async: the longest a call may go without a heartbeat once acknowledged; then '
  'HEARTBEAT_TIMEOUT (null: no heartbeats needed, only completion_timeout_ms).';

alter table quickjs.calls
  add column heartbeat_timeout_ms bigint,
  add column heartbeat_at timestamptz,
  add column heartbeat_details jsonb,
  add column heartbeat_deadline_at timestamptz;
comment on column quickjs.calls.heartbeat_timeout_ms is
  'An asynchronous call: its service''s heartbeat_timeout_ms when it was last sent (what the '
  'service was told, and what its heartbeats are held to).';
comment on column quickjs.calls.heartbeat_at is 'An asynchronous call: its last heartbeat.';
comment on column quickjs.calls.heartbeat_details is
  'An asynchronous call: the progress its last heartbeat reported (sent again with a re-sent call).';
comment on column quickjs.calls.heartbeat_deadline_at is
  'An asynchronous call: when it fails HEARTBEAT_TIMEOUT if no heartbeat or completion came.';
create index calls_heartbeat_deadline on quickjs.calls (heartbeat_deadline_at)
  where heartbeat_deadline_at is not null and completed_at is null;
comment on index quickjs.calls_heartbeat_deadline is
  'The asynchronous calls that must heartbeat, by when the next one is due.';

create or replace function quickjs.call_json(c quickjs.calls) returns jsonb language sql stable as $$
  select quickjs.strip_top_nulls(jsonb_build_object(
    'seq', c.seq, 'service', c.service, 'path', to_jsonb(c.method_path), 'args', c.args,
    'mode', c.mode, 'status', c.status, 'error', c.error, 'attempts', c.attempts,
    'idempotencyKey', c.idempotency_key, 'wakeAt', c.wake_at, 'childRunId', c.child_run_id,
    'createdAt', c.created_at, 'startedAt', c.started_at, 'completedAt', c.completed_at,
    'deadlineAt', c.deadline_at, 'heartbeatTimeoutMs', c.heartbeat_timeout_ms,
    'heartbeatAt', c.heartbeat_at,
    'heartbeatDetails', c.heartbeat_details, 'heartbeatDeadlineAt', c.heartbeat_deadline_at,
    'attemptErrors', case when jsonb_array_length(c.attempt_errors) > 0 then c.attempt_errors end,
    -- sent, waiting for its completion: a restored VM must not send it again
    'awaiting', case when c.completion_sent_at is not null and c.completed_at is null
                     then true end))
    || case when c.status = 'succeeded' then jsonb_build_object('result', c.result) else '{}' end
    || case when c.status = 'succeeded' and c.result_text is not null
         then jsonb_build_object('resultText', c.result_text) else '{}' end
$$;

-- a send (or a re-send) fixes the call's heartbeat timeout from its service, which the engine
-- tells the service (call_json heartbeatTimeoutMs), and clears the heartbeat deadline with the
-- rest: the send's acknowledgement sets it again
create or replace function quickjs.issue_completion(
  p_run_id uuid, p_token bigint, p_seq int, p_sha256 text, p_now timestamptz default now())
returns jsonb language plpgsql as $$
declare
  r quickjs.runs := quickjs.lock_leased_run(p_run_id, p_token);
  c quickjs.calls;
begin
  update quickjs.calls set completion_sha256 = p_sha256, completion_sent_at = null,
    deadline_at = null, heartbeat_deadline_at = null, started_at = coalesce(started_at, p_now),
    heartbeat_timeout_ms = (select s.heartbeat_timeout_ms from quickjs.services s
                            where s.name = quickjs.calls.service)
  where run_id = r.id and seq = p_seq and completed_at is null
  returning * into c;
  if not found then
    c := quickjs.require_call(r.id, p_seq); -- left as it was, or CALL_NOT_FOUND
  end if;
  return quickjs.call_json(c);
end $$;

-- the acknowledgement starts the heartbeat clock (or a heartbeat that raced it, whichever
-- came later)
create or replace function quickjs.completion_sent(
  p_run_id uuid, p_token bigint, p_seq int, p_deadline_at timestamptz,
  p_now timestamptz default now())
returns jsonb language plpgsql as $$
declare
  r quickjs.runs := quickjs.lock_leased_run(p_run_id, p_token);
  c quickjs.calls;
begin
  update quickjs.calls set completion_sent_at = p_now, deadline_at = p_deadline_at,
    heartbeat_deadline_at = greatest(p_now, heartbeat_at)
      + make_interval(secs => heartbeat_timeout_ms / 1000.0)
  where run_id = r.id and seq = p_seq and completed_at is null
  returning * into c;
  if not found then
    c := quickjs.require_call(r.id, p_seq); -- left as it was, or CALL_NOT_FOUND
  end if;
  return quickjs.call_json(c);
end $$;

-- The asynchronous call a completion token opens, locked: CALL_NOT_FOUND, or
-- COMPLETION_REFUSED for a token it was not last sent with.
create function quickjs.lock_completable_call(
  p_run_id uuid, p_seq int, p_completion_token text)
returns quickjs.calls language plpgsql as $$
declare
  c quickjs.calls;
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
  return c;
end $$;
comment on function quickjs.lock_completable_call is
  'Locks the asynchronous call a completion token belongs to (CALL_NOT_FOUND, COMPLETION_REFUSED).';

-- complete_call as before, its token checked by the one function heartbeats use too
create or replace function quickjs.complete_call(
  p_run_id uuid, p_seq int, p_completion_token text, p_ok boolean, p_result jsonb default null,
  p_error jsonb default null, p_now timestamptz default now())
returns jsonb language plpgsql as $$
declare
  c quickjs.calls := quickjs.lock_completable_call(p_run_id, p_seq, p_completion_token);
  v_error jsonb;
begin
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

create function quickjs.heartbeat_call(
  p_run_id uuid, p_seq int, p_completion_token text, p_details jsonb default null,
  p_now timestamptz default now())
returns jsonb language plpgsql as $$
declare
  c quickjs.calls := quickjs.lock_completable_call(p_run_id, p_seq, p_completion_token);
  v_run_status quickjs.run_status;
begin
  select status into v_run_status from quickjs.runs where id = c.run_id;
  -- settled (completed, or failed at a deadline) or its run is over: the service may stop
  if c.completed_at is null then
    update quickjs.calls set heartbeat_at = p_now,
      heartbeat_details = coalesce(p_details, heartbeat_details),
      heartbeat_deadline_at = case when completion_sent_at is not null
        then p_now + make_interval(secs => heartbeat_timeout_ms / 1000.0) end
    where run_id = c.run_id and seq = c.seq returning * into c;
  end if;
  return quickjs.call_json(c) || jsonb_build_object(
    'alreadyCompleted', c.completed_at is not null, 'runStatus', v_run_status,
    'proceed', c.completed_at is null
      and v_run_status not in ('completed', 'failed', 'cancelled'));
end $$;
comment on function quickjs.heartbeat_call is
  'An asynchronous call''s service says it is alive, with optional progress (p_details): '
  'pushes back its heartbeat deadline. proceed false: the call is settled or its run is over.';

-- the tick fails the calls past either deadline: the completion's (CALL_TIMEOUT) or the
-- next heartbeat's (HEARTBEAT_TIMEOUT)
create or replace function quickjs.expire_completions(p_now timestamptz default now())
returns int language plpgsql as $$
declare
  v_count int := 0;
  c quickjs.calls;
begin
  for c in
    update quickjs.calls set status = 'failed', completed_at = p_now,
      error = case when deadline_at <= p_now
        then jsonb_build_object('name', 'ToolError', 'code', 'CALL_TIMEOUT', 'message', format(
          '%s.%s: no completion by its deadline (%s)', service, array_to_string(method_path, '.'),
          deadline_at))
        else jsonb_build_object('name', 'ToolError', 'code', 'HEARTBEAT_TIMEOUT', 'message', format(
          '%s.%s: no heartbeat for %s ms (the last: %s)', service,
          array_to_string(method_path, '.'), heartbeat_timeout_ms,
          coalesce(heartbeat_at::text, 'none since it was acknowledged at ' || completion_sent_at)))
        end
    where completed_at is null and completion_sent_at is not null
      and (deadline_at <= p_now or heartbeat_deadline_at <= p_now)
    returning *
  loop
    v_count := v_count + 1;
    perform quickjs.wake_run(r.id, p_now) from quickjs.runs r
    where r.id = c.run_id and r.status = 'suspended';
  end loop;
  return v_count;
end $$;
comment on function quickjs.expire_completions is
  'Fails the asynchronous calls past their deadline (CALL_TIMEOUT) or past their next heartbeat '
  '(HEARTBEAT_TIMEOUT), and wakes their runs (tick).';

-- as 5 of 5 does for the functions before it: service_role may call them, PUBLIC may not
revoke execute on function quickjs.lock_completable_call from public;
revoke execute on function quickjs.heartbeat_call from public;
do $$
begin
  if exists (select 1 from pg_roles where rolname = 'service_role') then
    grant execute on function quickjs.heartbeat_call to service_role;
  end if;
end $$;
