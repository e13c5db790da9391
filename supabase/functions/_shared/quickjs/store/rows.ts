/**
 * The shapes of what the SQL functions return (their jsonb, camelCase), written once: the
 * operation table (operations.ts) names them as each operation's result type.
 */
import type { RunError } from "../sandbox/errors.ts";
import type { Json } from "../sandbox/vm.ts";
import type { CallStatus, RunStatus } from "../engine/states.ts";

export interface LogLine {
  level: string;
  message: string;
  /** ms since the epoch (writes) or an ISO timestamp (reads). */
  at: number | string;
  /** The run's attempt (reads). */
  attempt?: number;
  /** The invocation that wrote it (reads). */
  invocation?: number;
}

/** A task's @retry (quickjs.task_versions.retry): restarts of a failed run from its input. */
export interface TaskRetry {
  /** Attempts in all, the first included (1..25). */
  attempts: number;
  /** Wait before the second attempt (0..1 day). */
  backoffMs?: number;
  /** Each wait is the one before times this (default 1). */
  multiplier?: number;
}

/** A run as the API shows it. */
export interface RunView {
  id: string;
  task: string;
  taskId: string;
  taskVersion: number;
  status: RunStatus;
  input: Json;
  /** SQL and PostgREST readers: the input's JSON text, keys in order (the store reads it). */
  inputText?: string;
  result?: Json;
  error?: RunError;
  /** SQL and PostgREST readers: the result's JSON text, keys in order (the store reads it). */
  resultText?: string;
  /** The run's attempt: 1, plus one per restart from its input by the task's @retry. */
  attempts: number;
  /** Invocations (claims) so far, of every attempt. */
  invocations: number;
  /** get_run: the attempts a task-level @retry ended, oldest first (quickjs.run_attempts). */
  previousAttempts?: {
    attempt: number;
    error: RunError;
    invocations: number;
    /** How many journal entries it made (kept in run_attempts.calls, never replayed). */
    calls: number;
    startedAt?: string;
    endedAt: string;
  }[];
  suspensions: number;
  /** Lost leases in a row (a worker died); too many fails the run. */
  leaseExpirations?: number;
  wakeAt?: string;
  waitingOn?: WaitingOn;
  parentRunId?: string;
  parentCallSeq?: number;
  ownerId?: string;
  idempotencyKey?: string;
  leaseOwner?: string;
  leaseExpiresAt?: string;
  createdAt: string;
  updatedAt: string;
  /** When the current attempt's first invocation began (earlier ones: previousAttempts). */
  startedAt?: string;
  finishedAt?: string;
  logs?: LogLine[];
  /** enqueue: false when an idempotency key returned an existing run. */
  created?: boolean;
  /** cancel: false when the run had already ended. */
  cancelled?: boolean;
}

export interface WaitingOn {
  calls: number[];
  children?: string[];
  /** Asynchronous calls waiting for their service's completion. */
  completions?: number[];
  wakeAt?: string;
}

export interface CallRecord {
  seq: number;
  service: string;
  path: string[];
  args: Json[];
  mode: "inline" | "durable";
  status: CallStatus;
  result?: Json;
  /** The result as JSON text, keys in their order (the store reads it into result). */
  resultText?: string;
  /** A settled call's error, or a retried call's last failed attempt's (pending, wakeAt). */
  error?: RunError & { data?: Json };
  /** Attempts sent: a service's retries, and sends again after a crash or a cut-off. */
  attempts: number;
  /** A retried call's failed attempts, in order (absent: none failed and was retried). */
  attemptErrors?: { attempt: number; at: string; error: RunError & { data?: Json } }[];
  idempotencyKey: string;
  wakeAt?: string;
  childRunId?: string;
  /** An asynchronous call: when it fails CALL_TIMEOUT without a completion. */
  deadlineAt?: string;
  /** An asynchronous call: the longest it may go without a heartbeat (absent: no limit). */
  heartbeatTimeoutMs?: number;
  /** An asynchronous call: its service's last heartbeat, and the progress it reported. */
  heartbeatAt?: string;
  heartbeatDetails?: Json;
  /** An asynchronous call: when it fails HEARTBEAT_TIMEOUT without a heartbeat. */
  heartbeatDeadlineAt?: string;
  /** An asynchronous call the service acknowledged, waiting for its completion. */
  awaiting?: true;
  createdAt: string;
  startedAt?: string;
  completedAt?: string;
  /** record_call: true when the call had settled before and is delivered from the journal. */
  replayed?: boolean;
}

/** quickjs.heartbeat_call: the call afterwards, and whether its service should go on. */
export interface CallHeartbeat extends CallRecord {
  alreadyCompleted: boolean;
  runStatus: RunStatus;
  /** false: the call is settled (completed, or failed at a deadline) or its run is over. */
  proceed: boolean;
}

/** A run a worker holds the lease of, with what it needs to continue it. */
export interface ClaimedRun extends RunView {
  fencingToken: number;
  code: string;
  limits: Record<string, number>;
  allowedTools: string[] | null;
  /** The saved VM (its header is inside: sandbox/snapshot.ts readSnapshot), null on a first run. */
  snapshot: Uint8Array | null;
  /** The parked calls of the snapshot and every call after it, in order. */
  calls: CallRecord[];
}

export interface PublishedTask {
  id: string;
  name: string;
  version: number;
  changed: boolean;
  codeSha256: string;
}

export interface Lease {
  runId: string;
  token: number;
}

/** What quickjs.repair_run did with a run. */
export interface RepairResult {
  action: "requeued" | "failed" | "settled" | "queued" | "dispatched" | "none";
  /** Why, in words (null when nothing was done). */
  reason: string | null;
  /** The run afterwards. */
  run: RunView;
}

/** quickjs.list_snapshots: a capacity view. */
export interface SnapshotList {
  count: number;
  totalBytes: number;
  snapshots: {
    runId: string;
    task: string;
    taskVersion: number;
    status: RunStatus;
    sizeBytes: number;
    /** The VM's wasm memory (what a restore allocates). */
    memoryBytes: number;
    format: number;
    wasmSha256: string;
    createdAt: string;
  }[];
}

/** A run as claim_runs returns it in its jsonb column (the snapshot comes in its own, bytea). */
export type ClaimJson = Omit<ClaimedRun, "snapshot">;

/** What is known of a stored snapshot without reading its bytes: columns derived from its header. */
export interface SnapshotInfo {
  runId: string;
  /** Stored size of the bytes. */
  sizeBytes: number;
  format: number;
  wasmSha256: string;
  /** The VM's wasm memory (what a restore allocates). */
  memoryBytes: number;
  /** The task's last call id when it was taken: later calls are new to the VM. */
  lastCallId: number;
  createdAt: string;
}

/** A run find_stuck_runs lists, with what is wrong and since when. */
export type StuckRun = RunView & { problem: string; since: string };

/** quickjs.dispatch_health: whether ready runs reach an executor. */
export interface DispatchHealth {
  /** settings dispatch: notify | pg_net | none. */
  mode: string;
  pgNet: boolean;
  functionUrl: string | null;
  /** Whether a key for pg_net's requests exists (Vault or settings). */
  key: boolean;
  /** The pg_cron tick's schedule, null when it is not scheduled (or cron is not readable). */
  tick: string | null;
  /** Connections whose last statement was LISTEN quickjs_runs (a hint). */
  listeners: number;
  /** Runs runnable for more than afterSeconds. */
  waiting: number;
  oldestSince: string | null;
  afterSeconds: number;
  /** Empty when all is well. */
  problems: string[];
}

/** tools.kv.get. */
export interface KvEntry {
  found: boolean;
  value?: Json;
  secret?: boolean;
}

/** quickjs.kv_call: the journal entry, the value the task gets, and whether it is a secret. */
export interface KvCallResult {
  call: CallRecord;
  value: Json;
  /** A get's value as JSON text in the order it was written (the store reads it into value). */
  valueText?: string;
  secret: boolean;
}

/** A registered external service (quickjs.services). */
export interface ServiceRow {
  name: string;
  url: string;
  headers: Record<string, string>;
  timeoutMs: number;
  /** async: the reply only acknowledges; quickjs.complete_call settles the call later. */
  completion: "inline" | "async";
  completionTimeoutMs: number;
  /** Retry policy of its calls (engine/retry.ts); absent: one attempt. */
  retry?: Record<string, Json>;
}
