-- Durable QuickJS tasks, 3 of 5: how ready runs are announced and sleepers woken. A run
-- that becomes queued is announced (NOTIFY for the worker, or an HTTP POST to the edge
-- function through pg_net, defined in the supabase migration); the tick (pg_cron, or a
-- worker) requeues lost leases, wakes due sleepers and announces lost announcements again.

-- Tells whoever runs work that a run is ready: NOTIFY for the worker (default), or an HTTP
-- POST to the edge function through pg_net, or nothing.
create function quickjs.dispatch(p_run_id uuid) returns void language plpgsql as $$
declare
  v_mode text := coalesce((select value from quickjs.settings where key = 'dispatch'), 'notify');
begin
  if v_mode = 'notify' then
    perform pg_notify('quickjs_runs', p_run_id::text);
  elsif v_mode = 'pg_net' and to_regproc('quickjs.dispatch_http') is not null then
    execute 'select quickjs.dispatch_http($1)' using p_run_id;
  end if;
end $$;
comment on function quickjs.dispatch is 'Announces a ready run: pg_notify(quickjs_runs), or pg_net when configured.';

create function quickjs.runs_dispatch() returns trigger language plpgsql as $$
begin
  if new.status = 'queued' and new.run_at <= now()
     and (tg_op = 'INSERT' or old.status is distinct from new.status)
     -- enqueue_run(p_announce => false): the caller is executing it already
     and not (tg_op = 'INSERT' and coalesce(current_setting('quickjs.announce', true), '') = 'off') then
    perform quickjs.dispatch(new.id);
  end if;
  return null;
end $$;
comment on function quickjs.runs_dispatch is 'Trigger: announces a run that became queued (quickjs.dispatch).';
create trigger runs_dispatch after insert or update of status on quickjs.runs
  for each row execute function quickjs.runs_dispatch();
comment on trigger runs_dispatch on quickjs.runs is 'See quickjs.runs_dispatch().';

create function quickjs.tick(p_now timestamptz default now()) returns jsonb language plpgsql as $$
declare
  v_requeued int := quickjs.requeue_expired_leases(p_now);
  v_expired int := quickjs.expire_completions(p_now);
  v_woken int;
begin
  select count(quickjs.wake_run(id, p_now)) into v_woken
  from quickjs.runs where status = 'suspended' and wake_at <= p_now;
  -- announced: queued runs that became due since they last changed (a retry's backoff, a
  -- start time: the trigger saw them not yet due), and runs whose dispatch was lost (worker
  -- down, pg_net failure, an executing request that died) once they are a minute overdue
  perform quickjs.dispatch(id) from quickjs.runs
  where status = 'queued' and run_at <= p_now
    and (run_at > updated_at or run_at <= p_now - interval '1 minute')
  order by run_at limit 100;
  return jsonb_build_object('requeued', v_requeued, 'woken', v_woken, 'expired', v_expired);
end $$;
comment on function quickjs.tick is
  'pg_cron calls this every 10 s (every minute before pg_cron 1.5): requeues runs whose worker '
  'vanished, fails asynchronous calls past their deadline, wakes sleepers that are due, announces queued runs that became due or were lost.';

create function quickjs.next_wake_at(p_now timestamptz default now()) returns jsonb
language sql stable as $$
  select jsonb_build_object('wakeAt', min(coalesce(wake_at, run_at)))
  from quickjs.runs
  where (status = 'suspended' and wake_at is not null) or (status = 'queued' and run_at > p_now)
$$;
comment on function quickjs.next_wake_at is 'When the next run becomes due (workers sleep until then).';
