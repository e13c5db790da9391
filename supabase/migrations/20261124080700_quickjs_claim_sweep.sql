-- Durable QuickJS tasks, after the five: the lease sweep out of the claim path. claim_runs
-- swept expired leases (requeue_expired_leases) on every claim; p_sweep false skips it, for a
-- worker whose claims sweep once a second (scripts/lib/worker_loop.ts; the tick sweeps every
-- 10 s too). Every other caller keeps the default, true: claim_runs as before. Its own file,
-- so the set above stays as it was; it grants what 5 of 5 grants, for the function it
-- recreates.

drop function quickjs.claim_runs(text, int, int, uuid, timestamptz);

create function quickjs.claim_runs(
  p_worker text, p_limit int default 1, p_lease_seconds int default 30,
  p_run_id uuid default null, p_now timestamptz default now(), p_sweep boolean default true)
returns table (run jsonb, snapshot bytea) language plpgsql as $$
declare
  -- p_now usually comes from a JavaScript clock (milliseconds) while run_at may come from
  -- now() (microseconds): a run enqueued in the same millisecond is due too
  v_due timestamptz := p_now + interval '999 microseconds';
begin
  if p_sweep then
    perform quickjs.requeue_expired_leases(p_now);
  end if;
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
  'one row each, the run (claim_json) and its snapshot bytes (null on a first run). '
  'p_sweep false: expired leases are not requeued first (the caller sweeps on its own).';

-- as 5 of 5 does for the functions before it: service_role may call it, PUBLIC may not
revoke execute on function quickjs.claim_runs from public;
do $$
begin
  if exists (select 1 from pg_roles where rolname = 'service_role') then
    grant execute on function quickjs.claim_runs to service_role;
  end if;
end $$;
