-- Durable QuickJS tasks, after the five: an index in claim_runs' order. Its pick (the due
-- runs by coalesce(wake_at, run_at), created_at, the first p_limit) read every queued run and
-- sorted them, a cost that grew with the queue (0.68 ms a claim with 2,000 queued); in this
-- order it reads the first p_limit and stops. Sleepers without a wake time (waiting on a call
-- or a child) are left out: claim_runs never picks them. Its own file, so the set above stays
-- as it was.

create index runs_claim_order on quickjs.runs (coalesce(wake_at, run_at), created_at)
  where status = 'queued' or (status = 'suspended' and wake_at is not null);
comment on index quickjs.runs_claim_order is
  'claim_runs: queued runs and sleepers with a wake time, in the order it leases them.';
