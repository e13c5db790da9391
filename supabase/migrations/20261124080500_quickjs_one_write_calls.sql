-- Durable QuickJS tasks, after the five: a host call journaled in one write, after it ran
-- (the engine's `journalAfter` path for in-process tools that opt in). Its own file, so the
-- set above stays as it was; it grants what 5 of 5 grants, for the function it adds.

-- An in-process tool's call in one fenced write: the worker runs it before anything is
-- journaled (its idempotency key, run id ':' seq, is known without the database: the claim
-- returned the journal after the snapshot, which had no entry at this seq, and claim_seq
-- gives exactly that key to a seq without one) and then journals the call and its outcome
-- together. A worker that dies while the tool runs has written nothing, so the call runs
-- again with the same key (at least once, as a 'started' entry would have it, with attempts
-- 1 again); one that dies after this left a settled entry, delivered from the journal and
-- never run again. Half the locked transactions of record_call then settle_call, for calls
-- that take microseconds.
create function quickjs.record_settled_call(
  p_run_id uuid, p_token bigint, p_seq int, p_service text, p_method_path text[], p_args jsonb,
  p_ok boolean, p_result jsonb default null, p_error jsonb default null,
  p_started_at timestamptz default null, p_logs jsonb default '[]',
  p_now timestamptz default now(), p_result_text text default null)
returns jsonb language plpgsql as $$
declare
  r quickjs.runs := quickjs.lock_leased_run(p_run_id, p_token);
  j record := quickjs.claim_seq(r, p_seq, p_service, p_method_path, p_args, p_now);
  c quickjs.calls := j.journaled;
begin
  if c.run_id is not null and c.status in ('succeeded', 'failed') then
    null; -- settled already: the first outcome stays
  elsif c.run_id is not null then
    update quickjs.calls set
      status = case when p_ok then 'succeeded' else 'failed' end::quickjs.call_status,
      result = case when p_ok then coalesce(p_result, 'null') end,
      result_text = case when p_ok then p_result_text end,
      error = case when p_ok then null else p_error end,
      mode = 'inline', attempts = greatest(attempts, 1),
      started_at = coalesce(started_at, p_started_at, p_now), completed_at = p_now
    where run_id = r.id and seq = p_seq returning * into c;
  else
    insert into quickjs.calls (run_id, seq, service, method_path, args, mode, status, attempts,
                               idempotency_key, result, result_text, error, created_at,
                               started_at, completed_at)
    values (r.id, p_seq, p_service, p_method_path, p_args, 'inline',
            case when p_ok then 'succeeded' else 'failed' end::quickjs.call_status, 1,
            j.new_key, case when p_ok then coalesce(p_result, 'null') end,
            case when p_ok then p_result_text end, case when p_ok then null else p_error end,
            coalesce(p_started_at, p_now), coalesce(p_started_at, p_now), p_now)
    returning * into c;
  end if;
  perform quickjs.append_logs(r.id, r.attempts, p_logs);
  return quickjs.call_json(c);
end $$;
comment on function quickjs.record_settled_call is
  'Journals an in-process call that has already run, with its outcome, in one fenced write '
  '(record_call and settle_call at once); an entry already settled keeps its first outcome.';

-- as 5 of 5 does for the functions before it: service_role may call it, PUBLIC may not
revoke execute on function quickjs.record_settled_call from public;
do $$
begin
  if exists (select 1 from pg_roles where rolname = 'service_role') then
    grant execute on function quickjs.record_settled_call to service_role;
  end if;
end $$;
