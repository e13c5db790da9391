-- Durable QuickJS tasks, 1 of 5: the schema. Types, the fencing sequence, tables, indexes,
-- row level security, and the two helpers everything else uses (raise_error, the caller's
-- user id). The later files add the run state machine (transitions), how ready runs are
-- announced (dispatch), operator tools (operators) and the Supabase-only parts (supabase).
-- Applies on plain PostgreSQL 15+ and on Supabase.

create schema if not exists quickjs;
comment on schema quickjs is 'Durable JavaScript tasks run in a QuickJS sandbox; see README.md.';

-- ---- types and the fencing sequence ------------------------------------------------------

-- Mirrored by RUN_STATUS in supabase/functions/_shared/quickjs/engine/states.ts.
create type quickjs.run_status as enum (
  'queued', 'running', 'suspended', 'completed', 'failed', 'cancelled'
);
comment on type quickjs.run_status is
  'queued: claimable at run_at; running: leased to a worker; suspended: VM saved, waiting for '
  'wake_at or a call to settle; completed/failed/cancelled: final.';

-- Mirrored by CALL_STATUS in engine/states.ts.
create type quickjs.call_status as enum ('pending', 'started', 'succeeded', 'failed');
comment on type quickjs.call_status is
  'pending: recorded, waiting (sleep, child run); started: being executed (attempts counts '
  'executions); succeeded/failed: final, delivered from the journal from then on.';

create sequence quickjs.fencing_tokens;
comment on sequence quickjs.fencing_tokens is 'One new token per claim; a transition must present the current one.';

-- ---- tables -------------------------------------------------------------------------------

create table quickjs.tasks (
  id uuid primary key default gen_random_uuid(),
  name text not null unique
    constraint tasks_name_format check (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$'),
  latest_version int not null default 0,
  description text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table quickjs.tasks is 'Task definitions by name; the code lives in task_versions.';

create table quickjs.task_versions (
  task_id uuid not null references quickjs.tasks (id) on delete cascade,
  version int not null check (version > 0),
  code text not null,
  code_sha256 text not null,
  limits jsonb not null default '{}' check (jsonb_typeof(limits) = 'object'),
  allowed_tools text[],
  retry jsonb check (retry is null or (jsonb_typeof(retry) = 'object'
    and (retry ->> 'attempts')::int between 1 and 25
    and coalesce((retry ->> 'backoffMs')::bigint, 0) between 0 and 86400000)),
  created_at timestamptz not null default now(),
  primary key (task_id, version)
);
comment on table quickjs.task_versions is
  'Immutable code of each task version. A run pins the version it was created with.';
comment on column quickjs.task_versions.allowed_tools is
  'Services the task may call (null: all); names like kv, http, tasks, or a registered service.';
comment on column quickjs.task_versions.retry is
  'The task''s @retry: {attempts, backoffMs, multiplier}; a run that fails is started again from '
  'its input, as a new attempt, until attempts are spent (null: one attempt).';

create table quickjs.runs (
  id uuid primary key default gen_random_uuid(),
  task_id uuid not null,
  task_name text not null,
  task_version int not null,
  status quickjs.run_status not null default 'queued',
  input jsonb not null default 'null',
  input_text text,
  result jsonb,
  result_text text,
  error jsonb,
  attempts int not null default 1,
  invocations int not null default 0,
  lease_owner text,
  lease_expires_at timestamptz,
  fencing_token bigint,
  lease_expirations int not null default 0,
  run_at timestamptz not null default now(),
  wake_at timestamptz,
  waiting_on jsonb,
  suspensions int not null default 0,
  parent_run_id uuid references quickjs.runs (id) on delete set null,
  parent_call_seq int,
  depth int not null default 0,
  root_run_id uuid,
  owner_id uuid,
  idempotency_key text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  started_at timestamptz,
  finished_at timestamptz,
  foreign key (task_id, task_version) references quickjs.task_versions (task_id, version),
  constraint runs_leased check (
    status <> 'running' or (lease_owner is not null and lease_expires_at is not null and fencing_token is not null)),
  constraint runs_final check ((status in ('completed', 'failed', 'cancelled')) = (finished_at is not null)),
  -- an asynchronous call has a deadline (quickjs.expire_completions, from the tick)
  constraint runs_wakeable check (status <> 'suspended' or wake_at is not null
    or waiting_on ?| array['children', 'completions']),
  constraint runs_outcome check (status <> 'completed' or (result is not null and error is null))
);
comment on table quickjs.runs is
  'One execution of a task. A suspended run always has a way to wake: wake_at, a child run, or '
  'an asynchronous call''s completion or deadline.';
comment on column quickjs.runs.attempts is
  'The run''s attempt: 1, plus one for each restart from its input by the task''s @retry.';
comment on column quickjs.runs.invocations is
  'Claims so far: how many invocations (of any attempt) have worked on the run.';
comment on column quickjs.runs.input_text is
  'The input''s JSON text as it was given, object keys in their order (jsonb sorts them); null '
  'when jsonb keeps the order. The task is handed its input from it.';
comment on column quickjs.runs.result_text is
  'The result''s JSON text as the task returned it, object keys in their order (jsonb sorts them); '
  'a parent gets its child''s result from it.';
comment on column quickjs.runs.started_at is
  'When the current attempt''s first invocation began (earlier attempts: run_attempts.started_at).';
comment on column quickjs.runs.lease_expirations is
  'Times a worker lost the run without reporting back (crash, timeout); too many fails the run.';
comment on column quickjs.runs.root_run_id is
  'The run at the top of a child''s tree (null for a top run): start_child counts a tree''s runs by it.';
comment on column quickjs.runs.idempotency_key is
  'Unique per task and owner (runs_idempotency): one user cannot claim, or learn of, another''s key.';
comment on column quickjs.runs.waiting_on is 'What a suspended run waits for: {calls, children, wakeAt}.';

create index runs_claim_queued on quickjs.runs (run_at) where status = 'queued';
create index runs_claim_suspended on quickjs.runs (wake_at) where status = 'suspended';
create index runs_lease_expiry on quickjs.runs (lease_expires_at) where status = 'running';
-- Per owner: with (task, key) alone, one user could take a key another will use, and a
-- conflict would tell them of the other's run. Service calls (owner null) share one space.
create unique index runs_idempotency on quickjs.runs
  (task_id, coalesce(owner_id, '00000000-0000-0000-0000-000000000000'::uuid), idempotency_key)
  where idempotency_key is not null;
create index runs_root on quickjs.runs (root_run_id) where root_run_id is not null;
create index runs_parent on quickjs.runs (parent_run_id) where parent_run_id is not null;
create index runs_owner on quickjs.runs (owner_id, created_at desc) where owner_id is not null;
comment on index quickjs.runs_claim_queued is 'claim_runs: queued runs by when they are due.';
comment on index quickjs.runs_claim_suspended is 'claim_runs and the tick: sleepers by wake time.';
comment on index quickjs.runs_lease_expiry is 'The lease sweep: running runs by lease expiry.';
comment on index quickjs.runs_idempotency is 'enqueue_run and start_child: one run per task, owner and key.';
comment on index quickjs.runs_root is 'start_child: how many runs a tree has (the descendant limit).';
comment on index quickjs.runs_parent is 'A run''s children (cancel_run, find_stuck_runs).';
comment on index quickjs.runs_owner is 'A user''s runs, newest first (the authenticated read policy).';

create table quickjs.calls (
  run_id uuid not null references quickjs.runs (id) on delete cascade,
  seq int not null check (seq > 0),
  service text not null,
  method_path text[] not null default '{}',
  args jsonb not null default '[]',
  mode text not null check (mode in ('inline', 'durable')),
  status quickjs.call_status not null default 'pending',
  result jsonb,
  result_text text check (result_text is null or result is not null),
  error jsonb,
  attempts int not null default 0,
  idempotency_key text not null,
  wake_at timestamptz,
  child_run_id uuid references quickjs.runs (id) on delete set null,
  -- an asynchronous call (quickjs.complete_call)
  completion_sha256 text,
  completion_sent_at timestamptz,
  deadline_at timestamptz,
  created_at timestamptz not null default now(),
  started_at timestamptz,
  completed_at timestamptz,
  primary key (run_id, seq),
  constraint calls_final check ((status in ('succeeded', 'failed')) = (completed_at is not null))
);
comment on table quickjs.calls is
  'Journal of host calls. A settled call is never executed again: its outcome is delivered from '
  'here. A call in flight when its worker died is retried with the same idempotency key.';
comment on column quickjs.calls.completion_sha256 is
  'An asynchronous call: SHA-256 (hex) of the completion token last sent with it. A re-sent call '
  '(its first send''s fate unknown) carries a new token; only the last one completes it.';
comment on column quickjs.calls.completion_sent_at is
  'An asynchronous call: when the service acknowledged it (null: not yet, or being re-sent).';
comment on column quickjs.calls.deadline_at is
  'An asynchronous call: when it fails CALL_TIMEOUT if no completion came.';
create index calls_deadline on quickjs.calls (deadline_at)
  where deadline_at is not null and completed_at is null;
comment on index quickjs.calls_deadline is 'The asynchronous calls still waiting, by deadline.';
comment on column quickjs.calls.result_text is
  'The result''s JSON text, object keys in the order the tool or child gave them (jsonb sorts '
  'them): what a replay delivers.';

create table quickjs.snapshots (
  run_id uuid primary key references quickjs.runs (id) on delete cascade,
  bytes bytea not null,
  size_bytes int not null generated always as (octet_length(bytes)) stored,
  format int not null,
  wasm_sha256 text not null,
  memory_bytes bigint not null,
  last_call_id int not null,
  created_at timestamptz not null default now()
);
create index snapshots_build on quickjs.snapshots (format, wasm_sha256);
comment on index quickjs.snapshots_build is
  'Snapshots by the build that made them: which ones a new build cannot restore.';
comment on table quickjs.snapshots is
  'The saved VM of a suspended run (its whole wasm memory, as pages that differ from a fresh VM). '
  'It holds the task''s heap, secrets included: service role only.';
comment on column quickjs.snapshots.bytes is
  'The snapshot, header included (sandbox/snapshot.ts): the only copy of the header. The other '
  'columns are derived from it when it is stored, to find and size snapshots without reading them.';
comment on column quickjs.snapshots.format is 'The header''s format: with wasm_sha256, which builds can restore it.';
comment on column quickjs.snapshots.memory_bytes is 'The VM''s wasm memory: what a restore allocates.';
comment on column quickjs.snapshots.last_call_id is
  'The task''s last call id when it was taken: the journal entries after it are new to the VM.';

create table quickjs.run_logs (
  id bigint generated always as identity primary key,
  run_id uuid not null references quickjs.runs (id) on delete cascade,
  attempt int not null,
  invocation int,
  level text not null check (level in ('log', 'info', 'warn', 'error', 'debug', 'system')),
  message text not null,
  logged_at timestamptz not null
);
create index run_logs_run on quickjs.run_logs (run_id, id);
comment on index quickjs.run_logs_run is 'A run''s log lines in order (get_run reads the last ones).';
comment on table quickjs.run_logs is 'console output of runs (level system: the executor''s own notes).';
comment on column quickjs.run_logs.attempt is 'The run''s attempt the line belongs to (runs.attempts).';
comment on column quickjs.run_logs.invocation is 'The invocation that wrote the line (runs.invocations).';

create table quickjs.run_attempts (
  run_id uuid not null references quickjs.runs (id) on delete cascade,
  attempt int not null,
  error jsonb not null,
  calls jsonb not null default '[]',
  invocations int not null,
  started_at timestamptz,
  ended_at timestamptz not null,
  primary key (run_id, attempt)
);
comment on table quickjs.run_attempts is
  'Earlier attempts of runs restarted by their task''s @retry: the error each ended with and its '
  'journal (kept, never replayed: the next attempt starts a fresh journal).';

create table quickjs.kv (
  key text primary key check (length(key) between 1 and 512),
  value jsonb not null,
  -- never a secret's: the value column is the one a secret's protection applies to
  value_text text check (value_text is null or not secret),
  secret boolean not null default false,
  updated_at timestamptz not null default now()
);
comment on column quickjs.kv.value_text is
  'The value''s JSON text as the task wrote it: jsonb sorts object keys, this keeps their order '
  '(null: written by SQL; value then stands alone).';
comment on table quickjs.kv is
  'Per-project key-value store for tasks (tools.kv). Secret values are kept out of the journal and logs.';

create table quickjs.services (
  name text primary key check (name ~ '^[A-Za-z][A-Za-z0-9_-]{0,63}$'),
  url text not null check (url ~ '^https?://'),
  headers jsonb not null default '{}' check (jsonb_typeof(headers) = 'object'),
  timeout_ms int not null default 30000 check (timeout_ms between 100 and 900000),
  -- async: see quickjs.complete_call
  completion text not null default 'inline' check (completion in ('inline', 'async')),
  -- 1 s .. 30 days
  completion_timeout_ms bigint not null default 86400000
    check (completion_timeout_ms between 1000 and 2592000000),
  retry jsonb check (retry is null or jsonb_typeof(retry) = 'object'),
  description text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table quickjs.services is
  'External services tasks call as tools.<name>.<method>(args): a POST of {method, args} to url.';
comment on column quickjs.services.completion is
  'inline: the call''s result is the HTTP answer (within timeout_ms). async: the answer only '
  'acknowledges; the result comes later through quickjs.complete_call().';
comment on column quickjs.services.completion_timeout_ms is
  'async: how long after the call was sent its completion may come; then CALL_TIMEOUT.';
comment on column quickjs.services.retry is
  'Retry policy of the service''s calls (null: one attempt): {attempts, initialDelayMs, '
  'maxDelayMs, multiplier, jitter, codes}; see README "Retries".';

create table quickjs.settings (
  key text primary key,
  value text not null
);
comment on table quickjs.settings is
  'Dispatch settings: dispatch = notify | pg_net | none; function_url for pg_net. Fan-out '
  'limits: max_children_per_run (default 100), max_descendants_per_root (default 1000).';
insert into quickjs.settings (key, value) values ('dispatch', 'notify');

-- ---- row level security ---------------------------------------------------------------------
-- Enabled on every table; with no policy, only the table owner and roles that bypass RLS
-- (Supabase's service_role, postgres) see rows. Policies for Supabase roles are in the
-- supabase migration.

alter table quickjs.tasks enable row level security;
alter table quickjs.task_versions enable row level security;
alter table quickjs.runs enable row level security;
alter table quickjs.calls enable row level security;
alter table quickjs.snapshots enable row level security;
alter table quickjs.run_logs enable row level security;
alter table quickjs.run_attempts enable row level security;
alter table quickjs.kv enable row level security;
alter table quickjs.services enable row level security;
alter table quickjs.settings enable row level security;

-- ---- helpers every later file uses -------------------------------------------------------

-- The only way the SQL raises an error: callers pass a literal code, so the codes the SQL
-- can raise are exactly the literals in these files.
create function quickjs.raise_error(p_code text, p_message text, p_sqlstate text default 'QJ400')
returns void language plpgsql as $$
begin
  raise exception using errcode = p_sqlstate, message = p_message, hint = p_code;
end $$;
comment on function quickjs.raise_error is
  'Raises an error the store maps to StoreError(code = hint): SQLSTATE QJ404 (not found), '
  'QJ409 (conflict) or QJ400.';

create function quickjs.current_user_id() returns uuid language sql stable as $$
  select nullif(coalesce(
    nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub',
    current_setting('request.jwt.claim.sub', true)), '')::uuid
$$;
comment on function quickjs.current_user_id is 'The caller''s user id from PostgREST''s JWT claims (null outside PostgREST).';
