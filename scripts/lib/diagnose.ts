/**
 * What scripts/diagnose-vm-state.ts reports, as data: a run with its journal, snapshot
 * header and logs; a dry-run restore of its snapshot in this process; the stuck runs (and
 * their repair); the largest snapshots. Reads only, except repairStuckRuns.
 */
import {
  type CallRecord,
  type DispatchHealth,
  incompatibility,
  readSnapshot,
  type RepairResult,
  restoreSnapshot,
  type RunView,
  SandboxError,
  sealJournal,
  type SnapshotHeader,
  type SnapshotInfo,
  snapshotKeysFromEnv,
  type SnapshotList,
  type Store,
  type StuckRun,
} from "../../supabase/functions/_shared/quickjs/mod.ts";
import { shorten } from "./format.ts";

/** Values (input, result, call arguments and outcomes) are shown as JSON text cut to this. */
export const VALUE_CHARS = 120;

/** A run as inspect shows it: the API's view without logs, input and result shortened. */
export type RunSummary = Omit<RunView, "logs" | "input" | "result"> & {
  input: string;
  result?: string;
};

/** One journal entry, its values shortened. */
export interface CallSummary {
  seq: number;
  /** service.method.path */
  call: string;
  args: string;
  mode: CallRecord["mode"];
  status: CallRecord["status"];
  attempts: number;
  idempotencyKey: string;
  childRunId?: string;
  wakeAt?: string;
  createdAt: string;
  completedAt?: string;
  /** JSON of the result, or "CODE: message" of the error; absent while unsettled. */
  outcome?: string;
  /** An asynchronous call still waiting: its deadline, and its heartbeats'. */
  waiting?: string;
  /** A retried call's failed attempts, "N CODE" each (the journal keeps them all). */
  failedAttempts?: string[];
}

/** The operator's key ring (QUICKJS_ENCRYPTION_KEY): keyed snapshots verify and decrypt with it. */
function snapshotKeys() {
  const keys = snapshotKeysFromEnv();
  return keys.length ? keys : undefined;
}

/**
 * A snapshot as inspect shows it: the header read from its bytes (the only copy), or, when
 * they are damaged, what the database's columns derived from it say.
 */
export interface SnapshotSummary {
  format: number;
  wasmSha256: string;
  memoryBytes: number;
  lastCallId: number;
  sizeBytes: number;
  createdAt: string;
  /** From the header; absent when the bytes do not parse. */
  variant?: string;
  packageVersion?: string;
  pageCount?: number;
  parkedCalls?: number[];
  /** Whether this build can restore it (same format, build and VM setup). */
  restorable: boolean;
  /** Why not, when it cannot. */
  incompatibility?: string;
  /** "ok", or why the stored bytes fail their checksum or do not parse. */
  integrity: string;
}

export interface RunReport {
  run: RunSummary;
  calls: CallSummary[];
  snapshot: SnapshotSummary | null;
  /** The last log lines, oldest first. */
  logs: { at: string; attempt?: number; invocation?: number; level: string; message: string }[];
  /** Log lines read: one more than shown when there are earlier ones. */
  logCount: number;
}

/** The run, its journal, snapshot header and last `logLines` log lines; null if no such run. */
export async function inspectRun(
  store: Store,
  runId: string,
  options: { logLines?: number } = {},
): Promise<RunReport | null> {
  const keep = Math.max(0, options.logLines ?? 20);
  // get_run returns the last p_log_limit lines; one more says whether there are earlier ones
  const view = await store.getRun(runId, { logLimit: keep + 1 });
  if (!view) return null;
  // with the operator's key the sealed journal opens; without it, entries show as sealed
  const journal = sealJournal(store, snapshotKeysFromEnv());
  const [calls, snapshot] = await Promise.all([
    journal.listCalls(runId),
    store.getSnapshot(runId),
  ]);
  const { logs = [], input, result, ...rest } = view;
  const run: RunSummary = { ...rest, input: shorten(input, VALUE_CHARS) };
  if (view.status === "completed") run.result = shorten(result, VALUE_CHARS);
  return {
    run,
    calls: calls.map(summarizeCall),
    snapshot: snapshot && await summarizeSnapshot(snapshot),
    logs: logs.slice(logs.length - keep).map((l) => ({
      at: String(l.at),
      ...(l.attempt !== undefined ? { attempt: l.attempt } : {}),
      ...(typeof l.invocation === "number" ? { invocation: l.invocation } : {}),
      level: l.level,
      message: l.message,
    })),
    logCount: logs.length,
  };
}

function summarizeCall(call: CallRecord): CallSummary {
  const summary: CallSummary = {
    seq: call.seq,
    call: [call.service, ...call.path].join("."),
    args: shorten(call.args, VALUE_CHARS),
    mode: call.mode,
    status: call.status,
    attempts: call.attempts,
    idempotencyKey: call.idempotencyKey,
    createdAt: call.createdAt,
  };
  if (call.childRunId) summary.childRunId = call.childRunId;
  if (call.wakeAt) summary.wakeAt = call.wakeAt;
  if (call.completedAt) summary.completedAt = call.completedAt;
  if (call.awaiting) {
    const beat = call.heartbeatAt
      ? `; last heartbeat ${call.heartbeatAt}` +
        (call.heartbeatDetails !== undefined
          ? ` (${shorten(call.heartbeatDetails, VALUE_CHARS)})`
          : "")
      : "";
    const due = call.heartbeatDeadlineAt ? `; next heartbeat by ${call.heartbeatDeadlineAt}` : "";
    summary.waiting = `completion by ${call.deadlineAt}${beat}${due}`;
  }
  if (call.attemptErrors?.length) {
    summary.failedAttempts = call.attemptErrors.map((a) =>
      `${a.attempt} ${a.error.code ?? a.error.name ?? "Error"}`
    );
  }
  if (call.status === "succeeded") summary.outcome = shorten(call.result ?? null, VALUE_CHARS);
  if (call.status === "failed") {
    const text = `${call.error?.code ?? call.error?.name ?? "Error"}: ${call.error?.message ?? ""}`;
    summary.outcome = text.length > VALUE_CHARS ? `${text.slice(0, VALUE_CHARS - 1)}…` : text;
  }
  return summary;
}

async function summarizeSnapshot(
  snapshot: SnapshotInfo & { bytes: Uint8Array },
): Promise<SnapshotSummary> {
  let header: SnapshotHeader | undefined;
  let integrity = "ok";
  try {
    header = (await readSnapshot(snapshot.bytes, { key: snapshotKeys() })).header;
  } catch (e) {
    integrity = e instanceof SandboxError ? `${e.code}: ${e.message}` : String(e);
  }
  let why: string | undefined;
  try {
    why = header ? await incompatibility(header) : "its bytes are damaged (see integrity)";
  } catch (e) {
    why = `cannot check: ${(e as Error).message}`;
  }
  return {
    format: header?.format ?? snapshot.format,
    wasmSha256: header?.wasmSha256 ?? snapshot.wasmSha256,
    memoryBytes: header?.memoryBytes ?? snapshot.memoryBytes,
    lastCallId: header?.lastCallId ?? snapshot.lastCallId,
    sizeBytes: snapshot.sizeBytes,
    createdAt: snapshot.createdAt,
    ...(header
      ? {
        variant: header.variant,
        packageVersion: header.packageVersion,
        pageCount: header.pageCount,
        parkedCalls: header.parkedCalls,
      }
      : {}),
    restorable: why === undefined,
    ...(why !== undefined ? { incompatibility: why } : {}),
    integrity,
  };
}

export interface RestoreReport {
  runId: string;
  ok: boolean;
  /** SandboxError codes (SNAPSHOT_CORRUPT, SNAPSHOT_INCOMPATIBLE), or RUN_NOT_FOUND, NO_SNAPSHOT. */
  error?: { code: string; message: string };
  sizeBytes?: number;
  restoreMs?: number;
  /** The calls the restored VM is parked on. */
  parkedCalls?: number[];
  /** The restored VM's QuickJS heap and wasm memory. */
  memory?: { heapBytes: number; wasmBytes: number };
}

/**
 * Restores the run's snapshot into a VM in this process and disposes it: whether a worker
 * could continue the run. Writes nothing to the database.
 */
export async function restoreDryRun(store: Store, runId: string): Promise<RestoreReport> {
  const snapshot = await store.getSnapshot(runId);
  if (!snapshot) {
    const run = await store.getRun(runId, { logLimit: 0 });
    return {
      runId,
      ok: false,
      error: run
        ? {
          code: "NO_SNAPSHOT",
          message: `run ${runId} has no snapshot (it is ${run.status}; only suspended runs ` +
            "and runs that suspended before have one)",
        }
        : { code: "RUN_NOT_FOUND", message: `run ${runId} does not exist` },
    };
  }
  const t0 = performance.now();
  let vm;
  try {
    // a dry run cannot read the task version's limits: it restores under the ones the
    // verified header records (the engine passes the task's, and refuses a mismatch)
    const { header } = await readSnapshot(snapshot.bytes, { key: snapshotKeys() });
    ({ vm } = await restoreSnapshot(snapshot.bytes, {
      runId,
      limits: header.limits,
      key: snapshotKeys(),
    }));
  } catch (e) {
    return {
      runId,
      ok: false,
      sizeBytes: snapshot.sizeBytes,
      restoreMs: performance.now() - t0,
      error: e instanceof SandboxError
        ? { code: e.code, message: e.message }
        : { code: "RESTORE_FAILED", message: (e as Error)?.message ?? String(e) },
    };
  }
  const restoreMs = performance.now() - t0;
  try {
    const state = vm.state();
    return {
      runId,
      ok: true,
      sizeBytes: snapshot.sizeBytes,
      restoreMs,
      parkedCalls: state.kind === "parked" ? state.calls : [],
      memory: vm.memoryUsage(),
    };
  } finally {
    vm.dispose();
  }
}

export type { StuckRun };

export interface StuckReport {
  stuck: StuckRun[];
  /** With fix: one repair per stuck run (a run listed for two problems is repaired once). */
  repairs?: (RepairResult & { runId: string })[];
}

/** The runs find_stuck_runs lists. */
export async function findStuckRuns(store: Store, now?: Date): Promise<StuckRun[]> {
  return await store.findStuckRuns(now);
}

/** Lists the stuck runs and repairs each one with quickjs.repair_run (one transaction each). */
export async function repairStuckRuns(store: Store, now?: Date): Promise<StuckReport> {
  const stuck = await store.findStuckRuns(now);
  const repairs: StuckReport["repairs"] = [];
  for (const id of new Set(stuck.map((r) => r.id))) {
    repairs.push({ runId: id, ...await store.repairRun(id, now) });
  }
  return { stuck, repairs };
}

export type { DispatchHealth };

/**
 * Whether ready runs reach an executor (quickjs.dispatch_health): problems is empty when
 * they do. A run runnable for more than `afterSeconds` (60) means nobody is taking runs.
 */
export async function dispatchHealth(
  store: Store,
  options: { now?: Date; afterSeconds?: number } = {},
): Promise<DispatchHealth> {
  return await store.dispatchHealth(options);
}

/** The largest snapshots, with the count and total size of all. */
export async function largestSnapshots(store: Store, limit = 20): Promise<SnapshotList> {
  return await store.listSnapshots(limit);
}
