-- Durable QuickJS tasks, after the five: the hot paths' SQL functions in PL/pgSQL. A
-- `language sql` function whose body PostgreSQL cannot inline (a FROM, an INSERT) is parsed
-- and planned again at every call; PL/pgSQL keeps its statements' plans for the session. So
-- claim_json (every claim: 0.63 ms of a 1.0 ms claim_runs, measured with track_functions)
-- and append_logs (every transition that carries console lines: 0.2 ms, even with none) keep
-- their queries and return the same values, with plans made once per connection, and
-- append_logs does nothing for no lines. Its own file, so the set above stays as it was.

create or replace function quickjs.claim_json(r quickjs.runs) returns jsonb
language plpgsql stable as $$
declare
  v_claim jsonb;
begin
  select quickjs.run_json(r) || jsonb_build_object(
    'fencingToken', r.fencing_token,
    'code', v.code, 'limits', v.limits, 'allowedTools', to_jsonb(v.allowed_tools),
    'calls', coalesce((
      select jsonb_agg(quickjs.call_json(c) order by c.seq) from quickjs.calls c
      where c.run_id = r.id
        and (s.run_id is null or c.seq > s.last_call_id or c.seq = any (quickjs.parked_calls(r)))),
      '[]'))
  into v_claim
  from quickjs.task_versions v
  left join quickjs.snapshots s on s.run_id = r.id
  where v.task_id = r.task_id and v.version = r.task_version;
  return v_claim;
end $$;

create or replace function quickjs.append_logs(p_run_id uuid, p_attempt int, p_logs jsonb)
returns void language plpgsql as $$
begin
  if p_logs is null or jsonb_array_length(p_logs) = 0 then
    return;
  end if;
  insert into quickjs.run_logs (run_id, attempt, invocation, level, message, logged_at)
  select p_run_id, p_attempt, (select invocations from quickjs.runs where id = p_run_id),
         coalesce(l ->> 'level', 'log'), coalesce(l ->> 'message', ''),
         coalesce(to_timestamp((l ->> 'at')::double precision / 1000), now())
  from jsonb_array_elements(p_logs) as l;
end $$;
