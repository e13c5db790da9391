/**
 * The engine's only way to the database: one typed method per SQL operation, over a
 * driver that knows how to call a function (postgres.js, PGlite or supabase-js).
 */
import { type ErrorCode, isErrorCode, QuickJsError } from "../errors.ts";
import type { Operation, OperationArgs, OperationResult } from "./operations.ts";
import {
  orderedText,
  readOrderedResult,
  withOrderedInput,
  withOrderedResult,
} from "./key_order.ts";
import type { RunError } from "../sandbox/errors.ts";
import type { Json } from "../sandbox/vm.ts";
import type { SnapshotHeader } from "../sandbox/snapshot.ts";
import type {
  CallRecord,
  ClaimedRun,
  DispatchHealth,
  KvCallResult,
  KvEntry,
  Lease,
  LogLine,
  PublishedTask,
  RepairResult,
  RunView,
  ServiceRow,
  SnapshotInfo,
  SnapshotList,
  StuckRun,
  TaskRetry,
  WaitingOn,
} from "./rows.ts";

// the row shapes are the store's vocabulary: callers import them from here (or mod.ts)
export type * from "./rows.ts";

/** Calls one SQL function. Implementations: postgres.ts, pglite.ts, supabase.ts. */
export interface SqlDriver {
  /** "postgres", "pglite" or "supabase", and where it points, for logs and test output. */
  readonly kind: "postgres" | "pglite" | "supabase";
  readonly description: string;
  call<Op extends Operation>(op: Op, args: OperationArgs<Op>): Promise<OperationResult<Op>>;
  /** Runs `onNotify(payload)` for each NOTIFY on the channel, if the driver can listen. */
  listen?(channel: string, onNotify: (payload: string) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

/** A database error with a stable code (the HINT of errors raised by quickjs.raise_error). */
export class StoreError extends QuickJsError {
  override name = "StoreError";
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; status?: number }) {
    super(code, message, options);
  }

  /**
   * Maps a driver's error ({ code: SQLSTATE, hint, message }) to a StoreError: SQL raises
   * QJ4xx with one of the listed codes in HINT (quickjs.raise_error); anything else is a
   * DATABASE_ERROR, its SQLSTATE kept in the cause.
   */
  static from(e: unknown): StoreError {
    if (e instanceof StoreError) return e;
    const err = (e ?? {}) as { code?: unknown; hint?: unknown; message?: unknown };
    const sqlstate = typeof err.code === "string" ? err.code : "";
    const message = typeof err.message === "string" ? err.message : String(e);
    if (/^QJ\d{3}$/.test(sqlstate) && isErrorCode(err.hint)) {
      return new StoreError(err.hint, message, { cause: e });
    }
    return new StoreError("DATABASE_ERROR", message, { cause: e });
  }
}

export class Store {
  constructor(readonly driver: SqlDriver) {}

  get description(): string {
    return `${this.driver.kind} (${this.driver.description})`;
  }

  /** An operation that returns a journal entry: its result read with its keys in order. */
  async #calls<
    Op extends "record_call" | "start_child" | "settle_call" | "retry_call" | "record_settled_call",
  >(
    op: Op,
    args: OperationArgs<Op>,
  ): Promise<CallRecord> {
    return withOrderedResult(await this.#call(op, args) as CallRecord);
  }

  async #call<Op extends Operation>(
    op: Op,
    args: OperationArgs<Op>,
  ): Promise<OperationResult<Op>> {
    for (let attempt = 1;; attempt++) {
      try {
        // a run or journal entry whose result jsonb would reorder comes with its text
        return readOrderedResult(await this.driver.call(op, args));
      } catch (e) {
        // Every operation is one transaction, so one that lost a deadlock or a
        // serialization race changed nothing and can simply run again.
        const sqlstate = (e as { code?: unknown })?.code;
        if ((sqlstate === "40P01" || sqlstate === "40001") && attempt < 3) continue;
        throw StoreError.from(e);
      }
    }
  }

  publishTask(task: {
    name: string;
    code: string;
    description?: string | null;
    limits?: Record<string, number>;
    allowedTools?: string[] | null;
    /** @retry: a run that fails starts again from its input, up to `attempts` in all. */
    retry?: TaskRetry | null;
  }): Promise<PublishedTask> {
    return this.#call("publish_task", {
      p_name: task.name,
      p_code: task.code,
      p_description: task.description ?? null,
      p_limits: task.limits ?? {},
      p_allowed_tools: task.allowedTools ?? null,
      p_retry: task.retry ?? null,
    });
  }

  enqueueRun(run: {
    task?: string;
    taskId?: string;
    input?: Json;
    idempotencyKey?: string | null;
    ownerId?: string | null;
    runAt?: Date | null;
    now?: Date;
    /**
     * false when the caller executes the run itself at once (POST /runs): it is then not
     * dispatched (NOTIFY or pg_net) as well. The tick announces it if that execution fails.
     */
    announce?: boolean;
  }): Promise<RunView> {
    return this.#call("enqueue_run", {
      p_task: run.task ?? null,
      p_task_id: run.taskId ?? null,
      p_input: run.input ?? null,
      p_idempotency_key: run.idempotencyKey ?? null,
      p_owner_id: run.ownerId ?? null,
      p_run_at: run.runAt ?? null,
      p_now: run.now,
      p_announce: run.announce ?? true,
      p_input_text: orderedText(run.input),
    });
  }

  async claimRuns(claim: {
    worker: string;
    limit?: number;
    leaseSeconds: number;
    runId?: string;
    now?: Date;
  }): Promise<ClaimedRun[]> {
    const rows = await this.#call("claim_runs", {
      p_worker: claim.worker,
      p_limit: claim.limit ?? 1,
      p_lease_seconds: claim.leaseSeconds,
      p_run_id: claim.runId ?? null,
      p_now: claim.now,
    });
    return rows.map(({ run, snapshot }) => ({
      ...withOrderedInput(run),
      calls: run.calls.map(withOrderedResult),
      snapshot,
    }));
  }

  heartbeat(lease: Lease, leaseSeconds: number, now?: Date): Promise<{ leaseExpiresAt: string }> {
    return this.#call("heartbeat", {
      p_run_id: lease.runId,
      p_token: lease.token,
      p_lease_seconds: leaseSeconds,
      p_now: now,
    });
  }

  recordCall(lease: Lease, call: {
    seq: number;
    service: string;
    path: string[];
    args: Json[];
    mode: "inline" | "durable";
    wakeAt?: Date | null;
  }, now?: Date): Promise<CallRecord> {
    return this.#calls("record_call", {
      p_run_id: lease.runId,
      p_token: lease.token,
      p_seq: call.seq,
      p_service: call.service,
      p_method_path: call.path,
      p_args: call.args,
      p_mode: call.mode,
      p_wake_at: call.wakeAt ?? null,
      p_now: now,
    });
  }

  startChild(
    lease: Lease,
    child: { seq: number; task: string; input: Json; maxDepth?: number },
    now?: Date,
  ): Promise<CallRecord> {
    return this.#calls("start_child", {
      p_run_id: lease.runId,
      p_token: lease.token,
      p_seq: child.seq,
      p_task: child.task,
      p_input: child.input,
      p_max_depth: child.maxDepth,
      p_now: now,
      p_input_text: orderedText(child.input),
    });
  }

  /**
   * tools.kv for a run: fenced, journaled and applied in one transaction (quickjs.kv_call).
   * `args` is what the journal keeps; `value` what a set writes.
   */
  async kvCall(lease: Lease, call: {
    seq: number;
    op: "get" | "set" | "delete";
    key: string;
    value: Json;
    secret: boolean;
    args: Json[];
    logs?: LogLine[];
  }, now?: Date): Promise<KvCallResult> {
    const done = await this.#call("kv_call", {
      p_run_id: lease.runId,
      p_token: lease.token,
      p_seq: call.seq,
      p_op: call.op,
      p_key: call.key,
      p_value: call.value,
      p_secret: call.secret,
      p_args: call.args,
      p_logs: call.logs ?? [],
      p_now: now,
      // a secret's text would be a second copy outside what protects the value
      p_value_text: call.op === "set" && !call.secret ? orderedText(call.value) : undefined,
    });
    const { valueText, ...rest } = done;
    return {
      ...rest,
      call: withOrderedResult(done.call),
      value: valueText === undefined ? done.value : JSON.parse(valueText),
    };
  }

  settleCall(lease: Lease, settle: {
    seq: number;
    ok: boolean;
    result?: Json;
    error?: Json;
    logs?: LogLine[];
  }, now?: Date): Promise<CallRecord> {
    return this.#calls("settle_call", {
      p_run_id: lease.runId,
      p_token: lease.token,
      p_seq: settle.seq,
      p_ok: settle.ok,
      p_result: settle.ok ? settle.result ?? null : null,
      p_error: settle.ok ? null : settle.error ?? null,
      p_logs: settle.logs ?? [],
      p_now: now,
      p_result_text: settle.ok ? orderedText(settle.result) : undefined,
    });
  }

  /** A failed attempt to be retried at `wakeAt`: the call is pending again (quickjs.retry_call). */
  retryCall(lease: Lease, retry: {
    seq: number;
    error: Json;
    wakeAt: Date;
    logs?: LogLine[];
  }, now?: Date): Promise<CallRecord> {
    return this.#calls("retry_call", {
      p_run_id: lease.runId,
      p_token: lease.token,
      p_seq: retry.seq,
      p_error: retry.error,
      p_wake_at: retry.wakeAt,
      p_logs: retry.logs ?? [],
      p_now: now,
    });
  }

  /**
   * A call that has already run, journaled with its outcome in one fenced write
   * (quickjs.record_settled_call): record_call and settle_call at once.
   */
  recordSettledCall(lease: Lease, call: {
    seq: number;
    service: string;
    path: string[];
    args: Json[];
    ok: boolean;
    result?: Json;
    error?: Json;
    startedAt?: Date;
    logs?: LogLine[];
  }, now?: Date): Promise<CallRecord> {
    return this.#calls("record_settled_call", {
      p_run_id: lease.runId,
      p_token: lease.token,
      p_seq: call.seq,
      p_service: call.service,
      p_method_path: call.path,
      p_args: call.args,
      p_ok: call.ok,
      p_result: call.ok ? call.result ?? null : null,
      p_error: call.ok ? null : call.error ?? null,
      p_started_at: call.startedAt ?? null,
      p_logs: call.logs ?? [],
      p_result_text: call.ok ? orderedText(call.result) : undefined,
      p_now: now,
    });
  }
  /** Before an asynchronous call is sent (again): the hash of the token it carries. */
  issueCompletion(lease: Lease, seq: number, sha256: string, now?: Date): Promise<CallRecord> {
    return this.#call("issue_completion", {
      p_run_id: lease.runId,
      p_token: lease.token,
      p_seq: seq,
      p_sha256: sha256,
      p_now: now,
    });
  }

  /** The service acknowledged an asynchronous call: it waits for completion until deadlineAt. */
  completionSent(lease: Lease, seq: number, deadlineAt: Date, now?: Date): Promise<CallRecord> {
    return this.#call("completion_sent", {
      p_run_id: lease.runId,
      p_token: lease.token,
      p_seq: seq,
      p_deadline_at: deadlineAt,
      p_now: now,
    });
  }

  /**
   * A service completes an asynchronous call with the token it was sent: `result`, or
   * `error` ({code, message, data}). COMPLETION_REFUSED for another token; a second
   * completion changes nothing (alreadyCompleted).
   */
  completeCall(completion: {
    runId: string;
    seq: number;
    token: string;
    result?: Json;
    error?: { code?: string; message?: string; data?: Json };
  }, now?: Date): Promise<CallRecord & { alreadyCompleted: boolean }> {
    const ok = completion.error === undefined;
    return this.#call("complete_call", {
      p_run_id: completion.runId,
      p_seq: completion.seq,
      p_completion_token: completion.token,
      p_ok: ok,
      p_result: ok ? completion.result ?? null : null,
      p_error: ok ? null : completion.error as Json,
      p_now: now,
    });
  }

  /** Fails CALL_TIMEOUT the asynchronous calls past their deadline (the tick does this too). */
  expireCompletions(now?: Date): Promise<number> {
    return this.#call("expire_completions", { p_now: now });
  }

  appendLogs(lease: Lease, logs: LogLine[]): Promise<void> {
    return this.#call("append_run_logs", {
      p_run_id: lease.runId,
      p_token: lease.token,
      p_logs: logs,
    });
  }

  /**
   * Saves the VM and parks the run. `header` is the one takeSnapshot returned with the bytes:
   * the few columns derived from it (format, wasm hash, memory, last call id) are for finding
   * and sizing snapshots without reading them; the bytes stay the only copy of the header.
   */
  suspendRun(lease: Lease, suspend: {
    snapshot: Uint8Array;
    header: SnapshotHeader;
    wakeAt: Date | null;
    waitingOn: WaitingOn;
    logs?: LogLine[];
  }, now?: Date): Promise<RunView> {
    return this.#call("suspend_run", {
      p_run_id: lease.runId,
      p_token: lease.token,
      p_snapshot: suspend.snapshot,
      p_format: suspend.header.format,
      p_wasm_sha256: suspend.header.wasmSha256,
      p_memory_bytes: suspend.header.memoryBytes,
      p_last_call_id: suspend.header.lastCallId,
      p_wake_at: suspend.wakeAt,
      p_waiting_on: suspend.waitingOn,
      p_logs: suspend.logs ?? [],
      p_now: now,
    });
  }

  completeRun(lease: Lease, result: Json, logs: LogLine[] = [], now?: Date): Promise<RunView> {
    return this.#call("complete_run", {
      p_run_id: lease.runId,
      p_token: lease.token,
      p_result: result,
      p_logs: logs,
      p_now: now,
      // a parent gets its child's result with its keys in order (settle_from_child)
      p_result_text: orderedText(result),
    });
  }

  failRun(lease: Lease, error: RunError, logs: LogLine[] = [], now?: Date): Promise<RunView> {
    return this.#call("fail_run", {
      p_run_id: lease.runId,
      p_token: lease.token,
      p_error: error,
      p_logs: logs,
      p_now: now,
    });
  }

  cancelRun(
    runId: string,
    options: { reason?: string; ownerId?: string | null; now?: Date } = {},
  ): Promise<RunView> {
    return this.#call("cancel_run", {
      p_run_id: runId,
      p_reason: options.reason ?? null,
      p_owner_id: options.ownerId ?? null,
      p_now: options.now,
    });
  }

  requeueExpiredLeases(now?: Date, maxExpirations?: number): Promise<number> {
    return this.#call("requeue_expired_leases", { p_now: now, p_max_expirations: maxExpirations });
  }

  getRun(
    runId: string,
    options: { ownerId?: string | null; logLimit?: number } = {},
  ): Promise<RunView | null> {
    return this.#call("get_run", {
      p_run_id: runId,
      p_owner_id: options.ownerId ?? null,
      p_log_limit: options.logLimit,
    });
  }

  async listCalls(runId: string): Promise<CallRecord[]> {
    return (await this.#call("list_calls", { p_run_id: runId })).map(withOrderedResult);
  }

  /** A run's snapshot bytes with what the database knows of them, or null. */
  async getSnapshot(runId: string): Promise<(SnapshotInfo & { bytes: Uint8Array }) | null> {
    const [row] = await this.#call("get_snapshot", { p_run_id: runId });
    return row ? { ...row.snapshot, bytes: row.bytes } : null;
  }

  findStuckRuns(now?: Date): Promise<StuckRun[]> {
    return this.#call("find_stuck_runs", { p_now: now });
  }

  /** Whether ready runs reach an executor (diagnose dispatch). */
  dispatchHealth(options: { now?: Date; afterSeconds?: number } = {}): Promise<DispatchHealth> {
    return this.#call("dispatch_health", {
      p_now: options.now,
      p_after_seconds: options.afterSeconds,
    });
  }

  /** Announces a ready run as the settings say (NOTIFY, pg_net or nothing): quickjs.dispatch. */
  announceRun(runId: string): Promise<void> {
    return this.#call("dispatch", { p_run_id: runId });
  }

  tick(now?: Date): Promise<{ requeued: number; woken: number; expired: number }> {
    return this.#call("tick", { p_now: now });
  }

  /** When the next run becomes due (null: none is waiting). */
  async nextWakeAt(now?: Date): Promise<Date | null> {
    const row = await this.#call("next_wake_at", { p_now: now });
    return row.wakeAt ? new Date(row.wakeAt) : null;
  }

  kvGet(key: string): Promise<KvEntry> {
    return this.#call("kv_get", { p_key: key });
  }

  kvSet(key: string, value: Json, secret = false): Promise<void> {
    return this.#call("kv_set", {
      p_key: key,
      p_value: value,
      p_secret: secret,
      p_value_text: secret ? undefined : orderedText(value),
    });
  }

  kvDelete(key: string): Promise<boolean> {
    return this.#call("kv_delete", { p_key: key });
  }

  getService(name: string): Promise<ServiceRow | null> {
    return this.#call("get_service", { p_name: name });
  }

  close(): Promise<void> {
    return this.driver.close();
  }

  /**
   * Repairs one stuck run (see quickjs.find_stuck_runs): requeues an expired lease, fails a
   * suspended run without a snapshot (RUN_UNRECOVERABLE), settles calls from children that
   * ended and queues the run, or announces a due run again. RUN_NOT_FOUND if it does not exist.
   */
  repairRun(runId: string, now?: Date): Promise<RepairResult> {
    return this.#call("repair_run", { p_run_id: runId, p_now: now });
  }

  /** The largest snapshots, and the count and total size of all of them. */
  listSnapshots(limit?: number): Promise<SnapshotList> {
    return this.#call("list_snapshots", { p_limit: limit });
  }
}
