/**
 * The run loop: claim a run, get its VM (fresh, or restored from its snapshot with the
 * results that arrived meanwhile), run it, journal and carry out every host call, and end
 * the invocation with exactly one transition: complete, fail, or suspend with a reason to
 * wake. A run is never left "running" with an idle VM.
 *
 * The engine does no I/O of its own: the database is the Store, the world is the tools.
 */
import { type CallOutcome, type HostCall, type Json, TaskVm, type VmState } from "../sandbox/vm.ts";
import { getBootImage } from "../sandbox/boot_image.ts";
import { restoreSnapshot, type SnapshotKey, takeSnapshot } from "../sandbox/snapshot.ts";
import { snapshotKeysFromEnv } from "../sandbox/snapshot_keys.ts";
import { type RunError, SandboxError } from "../sandbox/errors.ts";
import { resolveLimits, type SandboxLimits } from "../sandbox/limits.ts";
import {
  type CallRecord,
  type ClaimedRun,
  type Lease,
  type LogLine,
  type Store,
  StoreError,
  type WaitingOn,
} from "../store/store.ts";
import { type Clock, systemClock } from "./clock.ts";
import {
  isSecretMarker,
  SECRET_MARKER,
  type ToolCallContext,
  type ToolPlan,
  type ToolRegistry,
} from "./tools.ts";
import { type CallError, toCallError } from "./tool_errors.ts";
import { SECRET_TEXT, SecretSet } from "./secrets.ts";
import { sealJournal, unreadableEntry } from "./journal_seal.ts";
import { isRetryable, retryDelayMs } from "./retry.ts";
import { isDataError, notStorableMessage, storableText, unstorablePath } from "./storable.ts";
import type { RunStatus } from "./states.ts";
import { type IsolateLife, unlimitedIsolate } from "./isolate.ts";
import { SpareVm } from "./spare_vm.ts";
import {
  freshVmBytes,
  isolateAdmission,
  type MemoryAdmission,
  type MemoryTicket,
  vmBytesFor,
} from "./admission.ts";

/** How much one invocation may spend before it suspends and lets a new one continue. */
export interface Budget {
  /** Wall-clock time. Supabase Edge Functions stop at 150 s; 10 s are left to save the VM. */
  wallMs: number;
  /**
   * Time inside the VM. Supabase allows 2 s of CPU per request; a slice may start just
   * before this budget is spent and run for up to sliceMs (1 s) more.
   */
  cpuMs: number;
}

export const DEFAULT_BUDGET: Readonly<Budget> = Object.freeze({ wallMs: 140_000, cpuMs: 1_000 });

export interface EngineConfig {
  store: Store;
  tools: ToolRegistry;
  /** Names this worker in leases and logs. */
  workerId: string;
  clock?: Clock;
  /** Lease length; the engine renews it every third of it. */
  leaseSeconds?: number;
  budget?: Partial<Budget>;
  /** Sleeps up to this long (that also fit the budget) run in-process; longer ones suspend. */
  inlineSleepMaxMs?: number;
  /** Every host call is durable: each await of a host call crosses a snapshot and a restore. */
  durableAll?: boolean;
  /** How deep child runs may nest. */
  maxChildDepth?: number;
  /** Observes what the engine does (CLIs print it, tests assert on it). */
  onEvent?: (event: EngineEvent) => void;
  /**
   * The worker's life as the platform counts it (edge function: Supabase's wall clock, CPU
   * over the worker's life, beforeunload); invocations end their budget inside it.
   */
  isolate?: IsolateLife;
  /** Bounds the VMs alive at once by their wasm memory (default: the isolate's, admission.ts). */
  admission?: MemoryAdmission;
  /**
   * Snapshot keys: the first signs and encrypts new snapshots and seals the journal's
   * payloads, reads use the one a snapshot or entry names (default: QUICKJS_ENCRYPTION_KEY,
   * snapshot_keys.ts; none: unkeyed and unsealed).
   */
  snapshotKeys?: SnapshotKey[];
  /**
   * Keep one fresh VM of the default limits made ahead, so a claimed run does not wait for
   * one (spare_vm.ts; default false: it is one more VM's memory, uncounted by admission).
   */
  spareVm?: boolean;
  /**
   * Runs each claimed run's invocation somewhere else than this thread: the self-hosted
   * worker and `deno task serve` give a pool of threads the host can stop on deadline
   * (scripts/lib/threads/); without one, invocations run here.
   */
  executor?: RunExecutor;
}

/**
 * Where invocations run when not in the engine's own thread. `run` does one invocation of
 * a run this engine claimed (its lease in `run`) and answers as runClaimed would.
 */
export interface RunExecutor {
  run(run: ClaimedRun, signals: InvocationSignals, engine: Engine): Promise<InvocationResult>;
  /** Made ready ahead of the first run (Engine.prepare). */
  prepare(): Promise<void>;
  /** Ends it (Engine.close): waits for nothing, runs in flight are the caller's. */
  close(): Promise<void>;
}

export type EngineEvent =
  | {
    type: "started" | "restored";
    runId: string;
    /** The run's attempt (a task-level @retry restarts it); `invocation`: the claim's count. */
    attempt: number;
    invocation: number;
    ms: number;
  }
  | { type: "call"; runId: string; seq: number; service: string; path: string[]; plan: string }
  | { type: "suspended"; runId: string; bytes: number; wakeAt: string | null; ms: number }
  | { type: "completed" | "failed"; runId: string }
  | { type: "lost"; runId: string; reason: string };

/** What one invocation did with a run. */
export interface InvocationResult {
  runId: string;
  task: string;
  /**
   * The run's status afterwards; "lost" when another worker took it over or it was
   * cancelled; "error" when the engine itself failed (the run is left to its lease, and
   * another worker continues it from its last snapshot).
   */
  status: RunStatus | "lost" | "error";
  result?: Json;
  error?: RunError;
  wakeAt?: string | null;
  snapshotBytes?: number;
  restored: boolean;
  cpuMs: number;
  wallMs: number;
}

export class Engine {
  readonly store: Store;
  readonly tools: ToolRegistry;
  readonly clock: Clock;
  readonly workerId: string;
  readonly leaseSeconds: number;
  readonly budget: Budget;
  readonly inlineSleepMaxMs: number;
  readonly durableAll: boolean;
  readonly maxChildDepth: number;
  readonly onEvent: (event: EngineEvent) => void;
  readonly isolate: IsolateLife;
  readonly admission: MemoryAdmission;
  readonly snapshotKeys: readonly SnapshotKey[];
  readonly #spare: SpareVm | undefined;
  readonly #executor: RunExecutor | undefined;

  constructor(config: EngineConfig) {
    this.snapshotKeys = config.snapshotKeys ?? snapshotKeysFromEnv();
    // with a key, the journal's payloads are sealed too (journal_seal.ts)
    this.store = sealJournal(config.store, this.snapshotKeys);
    this.tools = config.tools;
    this.clock = config.clock ?? systemClock;
    this.workerId = config.workerId;
    this.leaseSeconds = config.leaseSeconds ?? 30;
    this.budget = { ...DEFAULT_BUDGET, ...config.budget };
    this.inlineSleepMaxMs = config.inlineSleepMaxMs ?? 5_000;
    this.durableAll = config.durableAll ?? false;
    this.maxChildDepth = config.maxChildDepth ?? 16;
    this.onEvent = config.onEvent ?? (() => {});
    this.admission = config.admission ?? isolateAdmission();
    this.isolate = config.isolate ?? unlimitedIsolate;
    this.#executor = config.executor;
    if (config.spareVm && !config.executor) {
      this.#spare = new SpareVm(resolveLimits(), () => this.clock.now().getTime());
    }
  }

  /**
   * Builds what every invocation needs, the sandbox's boot image (~100 ms), ahead of the
   * first run: a worker calls it at start so its first job does not wait for it.
   */
  async prepare(): Promise<void> {
    if (this.#executor) return await this.#executor.prepare();
    await getBootImage();
    this.#spare?.fill();
  }

  /** Disposes what prepare() made ahead (the spare VM, the executor's threads). */
  async close(): Promise<void> {
    await this.#spare?.close();
    await this.#executor?.close();
  }

  /** A fresh VM for a run: the spare when it fits, else a new one. */
  async freshVm(limits: SandboxLimits): Promise<TaskVm> {
    return await this.#spare?.take(limits) ??
      await TaskVm.create({ limits, now: () => this.clock.now().getTime() });
  }

  /** Claims due runs (or the one given) and runs each for one invocation, concurrently. */
  async claimAndRun(
    options: { runId?: string; limit?: number } & InvocationSignals = {},
  ): Promise<InvocationResult[]> {
    // no more runs than VMs fit now (waiting until one does): the rest stay queued
    const limit = await this.admission.capacity(
      await freshVmBytes(resolveLimits()),
      options.limit ?? 1,
    );
    const claimedAt = performance.now();
    const claimed = await this.store.claimRuns({
      worker: this.workerId,
      limit,
      leaseSeconds: this.leaseSeconds,
      runId: options.runId,
      now: this.clock.now(),
    });
    // one run's trouble (the database gone mid-run) must not hide the others' results
    return await Promise.all(
      claimed.map((run) =>
        this.runClaimed(run, { ...options, claimedAt }).catch((e): InvocationResult => ({
          runId: run.id,
          task: run.task,
          status: "error",
          error: { code: "ENGINE_ERROR", name: "EngineError", message: (e as Error).message },
          restored: false,
          cpuMs: 0,
          wallMs: 0,
        }))
      ),
    );
  }

  /** One invocation of a run this worker holds the lease of. */
  runClaimed(run: ClaimedRun, signals: InvocationSignals = {}): Promise<InvocationResult> {
    if (this.#executor) return this.#executor.run(run, signals, this);
    return new Invocation(this, run, signals).run();
  }
}

export interface InvocationSignals {
  /**
   * Stop at once and write nothing, as if the process had died: the lease runs out and
   * another worker continues from the last snapshot. (Tests use it to simulate crashes.)
   */
  abort?: AbortSignal;
  /**
   * Hand the run over: suspend at the next idle point, to continue at once in another
   * invocation (a worker shutting down gracefully).
   */
  yield?: AbortSignal;
  /** performance.now() when the claim that leased the run was sent (default: now). */
  claimedAt?: number;
}

/** Marks the end of an invocation that lost its lease; unwinds to Invocation.run. */
class LeaseLost extends Error {
  override name = "LeaseLost";
}

/**
 * How one host call waits, from when the task makes it (or a restore finds it parked) until
 * its outcome is delivered to the task; then it leaves the call table.
 */
type Wait =
  /** Executing in this process. */
  | { kind: "running" }
  /** A sleep, due at `wakeAt` (ms on the engine's clock); `hold`: this invocation waits for it. */
  | { kind: "timer"; wakeAt: number; hold: boolean }
  /** A child run; SQL settles the call when the child ends. */
  | { kind: "child"; childRunId: string }
  /** Handed to an asynchronous service; SQL settles it on completion or at its deadline. */
  | { kind: "completion" }
  /** Continues in the next invocation: a checkpoint, a call deferred past the budget. */
  | { kind: "next" }
  /**
   * A failed attempt whose retry is due at `wakeAt` (journaled by quickjs.retry_call); then
   * `call` is sent again. `hold`: this invocation waits for it (a short backoff).
   */
  | { kind: "retry"; wakeAt: number; hold: boolean; call: HostCall }
  /**
   * Known and waiting to be delivered; `at` (ms) orders deliveries as timers and calls
   * settle; `journaled`: the journal has it already. `secret`: the task may use it, logs
   * must not show it.
   */
  | { kind: "ready"; outcome: CallOutcome; secret: boolean; at: number; journaled: boolean };

/** One call the task waits on. `fresh`: made in this invocation (not found parked). */
interface CallEntry {
  seq: number;
  wait: Wait;
  fresh: boolean;
}

type Known = { outcome: CallOutcome; secret: boolean; retryAt?: number };

const LOG_FLUSH_LINES = 200;
/** Ends one wait's timers (#waitForNext). */
const WAIT_OVER = Object.freeze({ reason: "the wait is over" });

class Invocation {
  readonly #engine: Engine;
  readonly #run: ClaimedRun;
  readonly #lease: Lease;
  readonly #limits: SandboxLimits;
  #badLimits: string | undefined;
  readonly #abort = new AbortController();
  readonly #yield: AbortSignal | undefined;
  readonly #signals: InvocationSignals;
  readonly #started = performance.now();
  #vm: TaskVm | undefined;
  /** The call table: every call the task waits on, by id. */
  readonly #calls = new Map<number, CallEntry>();
  /** Calls running on the one-write path (#startUnjournaled): not in the journal yet. */
  readonly #unjournaled = new Map<number, { call: HostCall; startedAt: Date }>();
  /** The highest seq the journal had at the claim (computed when first needed). */
  #journalTop: number | undefined;
  /** Ends the loop's current wait: a call running here settled, or a signal fired. */
  #wake: ((why: "settled" | "budget" | "lost") => void) | undefined;
  #logs: LogLine[] = [];
  /** The secret values the task has received: redacted from everything stored (secrets.ts). */
  readonly #secrets = new SecretSet();
  #restored = false;
  #heartbeat: ReturnType<typeof setInterval> | undefined;
  /**
   * When (performance.now()) the last claim or heartbeat that set the lease was sent: the
   * database's lease runs from a moment after it, so the lease surely holds until
   * `#leaseFrom` + leaseSeconds.
   */
  #leaseFrom: number;

  constructor(engine: Engine, run: ClaimedRun, signals: InvocationSignals) {
    this.#engine = engine;
    this.#run = run;
    this.#lease = { runId: run.id, token: run.fencingToken };
    try {
      this.#limits = resolveLimits(run.limits);
    } catch (e) {
      // limits written to the table by hand, out of range: the run cannot start
      this.#limits = resolveLimits({});
      this.#badLimits = (e as Error).message;
    }
    this.#signals = signals;
    this.#yield = signals.yield;
    this.#leaseFrom = signals.claimedAt ?? performance.now();
    signals.abort?.addEventListener("abort", this.#onAbort, { once: true });
    signals.yield?.addEventListener("abort", this.#onYield, { once: true });
    engine.isolate.unloading.addEventListener("abort", this.#onYield, { once: true });
    this.#abort.signal.addEventListener("abort", () => this.#wake?.("lost"), { once: true });
  }

  // Worker-wide signals outlive every invocation: their listeners are removed in run()'s
  // finally, or each run would leave one behind (a leak that slowed long-lived workers).
  readonly #onAbort = () => this.#abort.abort(this.#signals.abort?.reason);
  readonly #onYield = () => this.#wake?.("budget");

  get #store(): Store {
    return this.#engine.store;
  }

  get #now(): Date {
    return this.#engine.clock.now();
  }

  /** The task's Date.now(): the engine's clock, in which its sleeps are measured. */
  readonly #taskClock = () => this.#engine.clock.now().getTime();

  /** claim (done by the caller) → restore or boot → run → park → snapshot → suspend. */
  async run(): Promise<InvocationResult> {
    this.#startHeartbeat();
    let memory: MemoryTicket | undefined;
    try {
      memory = await this.#engine.admission.acquire(await vmBytesFor(this.#run)); // lease kept
      const state = await this.#open();
      return await this.#loop(state);
    } catch (e) {
      if (e instanceof LeaseLost || (e instanceof StoreError && e.code === "STALE_LEASE")) {
        this.#engine.onEvent({ type: "lost", runId: this.#run.id, reason: (e as Error).message });
        return this.#result("lost");
      }
      // The database refused a value (a data error, not an outage): the run cannot go on,
      // and retrying would fail the same way. It fails with a code, never left "running".
      if (e instanceof StoreError && isDataError(e)) return await this.#failOnDataError(e);
      // The engine itself failed (database unreachable, a bug): leave the run to the lease
      // expiry, which hands it to another worker from its last snapshot.
      throw e;
    } finally {
      clearInterval(this.#heartbeat);
      this.#signals.abort?.removeEventListener("abort", this.#onAbort);
      this.#signals.yield?.removeEventListener("abort", this.#onYield);
      this.#engine.isolate.unloading.removeEventListener("abort", this.#onYield);
      this.#abort.abort(new LeaseLost("invocation ended"));
      if (this.#vm && !this.#vm.disposed) this.#vm.dispose();
      memory?.release(this.#vm?.instance.memory); // counted until V8 frees it
    }
  }

  // ---- restore or boot --------------------------------------------------------------------

  async #open(): Promise<VmState> {
    const run = this.#run;
    if (this.#badLimits) {
      return {
        kind: "failed",
        error: { code: "TASK_INVALID", name: "TaskInvalid", message: this.#badLimits },
      };
    }
    const t0 = performance.now();
    if (run.snapshot) {
      let parked: number[];
      try {
        const restored = await restoreSnapshot(run.snapshot, {
          runId: run.id,
          limits: this.#limits,
          now: this.#taskClock,
          key: this.#engine.snapshotKeys.length ? this.#engine.snapshotKeys : undefined,
        });
        this.#vm = restored.vm;
        this.#secrets.learn(restored.vm.secretValues());
        parked = restored.header.parkedCalls;
      } catch (e) {
        if (e instanceof SandboxError) return { kind: "failed", error: e.toRunError() };
        throw e;
      }
      const sealed = this.#sealedJournal();
      if (sealed) return sealed;
      this.#restored = true;
      this.#engine.onEvent({
        type: "restored",
        runId: run.id,
        attempt: run.attempts,
        invocation: run.invocations,
        ms: performance.now() - t0,
      });
      // ctx.invocation is the one field of the task's ctx that changes
      this.#vm.setInvocation(run.invocations);
      this.#system(`restored the VM (invocation ${run.invocations})`);
      // the parked calls as the verified header lists them (the restore checked the VM agrees)
      return await this.#resumeParked(parked);
    }
    const sealed = this.#sealedJournal();
    if (sealed) return sealed;
    this.#vm = await this.#engine.freshVm(this.#limits);
    if (run.invocations > 1) {
      this.#system(`started from the top (attempt ${run.attempts}, invocation ${run.invocations})`);
    }
    const state = this.#vm.start(
      { code: run.code, filename: `${run.task}.js` },
      run.input,
      { runId: run.id, task: run.task, attempt: run.attempts, invocation: run.invocations },
    );
    this.#engine.onEvent({
      type: "started",
      runId: run.id,
      attempt: run.attempts,
      invocation: run.invocations,
      ms: performance.now() - t0,
    });
    return state;
  }

  /**
   * After a restore: fills the call table from the parked calls and their journal entries,
   * then delivers what arrived while the run slept (sleeps by deadline, other calls in the
   * order they completed). Calls cut off by the last suspension run again.
   */
  async #resumeParked(parked: number[]): Promise<VmState> {
    const now = this.#now;
    const journal = new Map(this.#run.calls.map((call) => [call.seq, call]));
    for (const seq of parked) {
      const call = journal.get(seq);
      if (!call) throw new Error(`the journal has no entry for parked call ${seq}`);
      const wait = await this.#waitOfParked(call, now);
      this.#calls.set(seq, { seq, wait, fresh: false });
    }
    let state = this.#vm!.state();
    // everything known now goes in before the task runs again, earliest first
    for (let next = this.#nextReady(now.getTime()); next; next = this.#nextReady(now.getTime())) {
      state = await this.#deliver(next);
    }
    return state;
  }

  /** A failure when a journal entry the run needs is sealed with a key this worker lacks. */
  #sealedJournal(): VmState | undefined {
    const entry = unreadableEntry(this.#run.calls);
    if (!entry) return undefined;
    return {
      kind: "failed",
      error: {
        code: "JOURNAL_UNREADABLE",
        name: "JournalUnreadable",
        message: `the journal's ${entry} does not open with this worker's keys ` +
          "(QUICKJS_ENCRYPTION_KEY): keep an old key in the ring until no run needs it",
      },
    };
  }

  /** How a call found parked in a restored VM waits, from its journal entry. */
  async #waitOfParked(call: CallRecord, now: Date): Promise<Wait> {
    const settled = call.status === "succeeded" || call.status === "failed";
    if (settled && !isSecretMarker(call.result)) {
      const at = call.service === "sleep" && call.wakeAt ? call.wakeAt : call.completedAt!;
      return {
        kind: "ready",
        outcome: outcomeOf(call),
        secret: false,
        at: Date.parse(at),
        journaled: true,
      };
    }
    if (call.service === "sleep" || call.service === "checkpoint") {
      const wakeAt = call.wakeAt ? Date.parse(call.wakeAt) : now.getTime();
      if (wakeAt <= now.getTime()) {
        return {
          kind: "ready",
          outcome: { ok: true },
          secret: false,
          at: wakeAt,
          journaled: false,
        };
      }
      return { kind: "timer", wakeAt, hold: false };
    }
    if (call.childRunId) return { kind: "child", childRunId: call.childRunId };
    // sent and acknowledged: its service completes it, it is not sent again
    if (call.awaiting) return { kind: "completion" };
    // an external call cut off by the last suspension, deferred to this invocation, or a
    // secret read (the journal keeps only a marker): run it now
    const again: HostCall = {
      id: call.seq,
      service: call.service,
      path: call.path,
      args: call.args,
    };
    const retry = this.#retryWaitOf(call, again, now);
    if (retry) return retry;
    // its arguments held a secret, and the journal has them redacted: not sent as they are
    const plan: ToolPlan = JSON.stringify(call.args).includes(SECRET_TEXT)
      ? { kind: "reject", error: secretCallInterrupted() }
      : await this.#engine.tools.plan(again, this.#run.allowedTools, now);
    return await this.#start(again, plan, { forceInline: true });
  }

  // ---- run --------------------------------------------------------------------------------

  async #loop(initial: VmState): Promise<InvocationResult> {
    let state = initial;
    for (;;) {
      this.#checkLease();
      state = await this.#acceptNewCalls(state);
      this.#collectLogs();
      if (state.kind === "done") return await this.#complete(state.result);
      if (state.kind === "failed") return await this.#fail(state.error);
      if (this.#vm!.hasNewCalls) continue;
      if (this.#budgetSpent()) return await this.#suspend("budget");
      if (this.#logs.length >= LOG_FLUSH_LINES) await this.#flushLogs();
      const next = await this.#waitForNext();
      if (next === "parked") return await this.#suspend("parked");
      if (next === "budget") return await this.#suspend("budget");
      state = await this.#deliver(next);
    }
  }

  /** Journals the calls the last slice made, starts them, delivers what is known at once. */
  async #acceptNewCalls(state: VmState): Promise<VmState> {
    if (!this.#vm) return state;
    const calls = this.#vm.takeCalls();
    if (calls.length === 0) return state;
    const now = this.#now;
    const known: CallEntry[] = [];
    for (const call of calls) {
      const plan = await this.#engine.tools.plan(call, this.#run.allowedTools, now);
      this.#engine.onEvent({
        type: "call",
        runId: this.#run.id,
        seq: call.id,
        service: call.service,
        path: call.path,
        plan: plan.kind,
      });
      const entry: CallEntry = {
        seq: call.id,
        wait: await this.#start(call, plan, {}),
        fresh: true,
      };
      this.#calls.set(call.id, entry);
      if (entry.wait.kind === "ready") known.push(entry);
    }
    // replayed from the journal or failed at once: the task sees them in call order
    for (const entry of known) state = await this.#deliver(entry);
    return state;
  }

  /** Journals one call and sets it going; returns how it waits. */
  async #start(call: HostCall, plan: ToolPlan, options: { forceInline?: boolean }): Promise<Wait> {
    const seq = call.id;
    const engine = this.#engine;
    const now = this.#now;
    const known = (outcome: CallOutcome, journaled: boolean, secret = false): Wait => ({
      kind: "ready",
      outcome,
      secret,
      at: now.getTime(),
      journaled,
    });
    const unstorable = unstorablePath(call.args);
    if (unstorable) {
      // the journal could not hold these arguments: refused before anything is written
      const error = {
        code: "VALUE_NOT_STORABLE",
        name: "ToolError",
        message: notStorableMessage("the call's arguments", unstorable),
      };
      plan = { kind: "reject", error };
      call = { ...call, args: [] };
    }
    if (plan.kind === "invoke" && plan.timeoutMs > this.#fullWallMs()) {
      // no invocation can wait that long: it would be cut off at the budget and sent again
      // in every invocation after, forever. Refused at the call, named, once.
      const name = [call.service, ...call.path].join(".");
      plan = {
        kind: "reject",
        error: {
          code: "TIMEOUT_OVER_BUDGET",
          name: "ToolError",
          message: `${name}: its timeout (${plan.timeoutMs} ms) is longer than an invocation ` +
            `may run (${this.#fullWallMs()} ms), so it could never finish; lower the service's ` +
            `timeout_ms (quickjs.services), register it with completion 'async', or raise the budget`,
        },
      };
    }
    // a child's input is stored as its run's input and read back by the child: no secret in it
    if (plan.kind === "child" && this.#secrets.within(plan.input)) {
      plan = { kind: "reject", error: secretToChild() };
    }
    // arguments that hold a secret are journaled redacted: the call runs now, with the real ones
    const carriesSecret = plan.kind === "invoke" && this.#secrets.within(call.args);
    switch (plan.kind) {
      case "reject": {
        const record = await this.#record(call, "inline");
        if (record.replayed) return known(outcomeOf(record), true);
        return known({ ok: false, error: plan.error }, false);
      }
      case "checkpoint": {
        const record = await this.#record(call, "durable", now);
        if (record.replayed) return known(outcomeOf(record), true);
        return { kind: "next" };
      }
      case "sleep": {
        const ms = plan.wakeAt.getTime() - now.getTime();
        const inline = !engine.durableAll && ms <= engine.inlineSleepMaxMs &&
          ms < this.#wallLeftMs();
        const record = await this.#record(call, inline ? "inline" : "durable", plan.wakeAt);
        if (record.replayed) return known(outcomeOf(record), true);
        // a sleep made again after a crash keeps its first deadline
        const wakeAt = record.wakeAt ? Date.parse(record.wakeAt) : plan.wakeAt.getTime();
        return { kind: "timer", wakeAt, hold: inline };
      }
      case "child": {
        const record = await this.#store.startChild(this.#lease, {
          seq,
          task: plan.task,
          input: plan.input,
          maxDepth: engine.maxChildDepth,
        }, now);
        if (record.status === "succeeded" || record.status === "failed") {
          return known(outcomeOf(record), true);
        }
        return { kind: "child", childRunId: record.childRunId! };
      }
      case "kv": {
        // a secret write runs now: later there would be only the redacted args to run it with
        if (engine.durableAll && !options.forceInline && !plan.secret) {
          const record = await this.#record(call, "durable", undefined, plan.journalArgs);
          if (record.replayed) return known(outcomeOf(record), true);
          return { kind: "next" };
        }
        this.#collectLogs();
        const done = await this.#store.kvCall(this.#lease, {
          seq,
          op: plan.op,
          key: plan.key,
          value: plan.value,
          secret: plan.secret,
          args: this.#secrets.json(plan.journalArgs),
          logs: this.#logs.splice(0),
        }, now);
        return known({ ok: true, value: done.value }, true, done.secret);
      }
      case "invoke": {
        if (this.#journalsAfter(call, plan, options)) return this.#startUnjournaled(call, plan);
        // a call whose journaled args are redacted (a secret write) must run now: later
        // there would be only the redacted args to run it with
        const defer = !options.forceInline && !plan.journalArgs && !carriesSecret &&
          (engine.durableAll || plan.timeoutMs > this.#wallLeftMs());
        const record = await this.#record(
          call,
          defer ? "durable" : "inline",
          undefined,
          plan.journalArgs,
        );
        // a secret read is never delivered from the journal (it holds a marker): run it again
        if (record.replayed && !isSecretMarker(record.result)) {
          return known(outcomeOf(record), true);
        }
        if (defer) return { kind: "next" };
        const backoff = this.#retryWaitOf(record, call, now);
        if (backoff) return backoff;
        const context: ToolCallContext = {
          runId: this.#run.id,
          seq,
          idempotencyKey: record.idempotencyKey,
          attempt: Math.max(record.attempts, 1),
          signal: this.#abort.signal,
        };
        const work = (async (): Promise<Known | "awaiting"> => {
          let known: Known;
          try {
            // the lease is checked right before the call leaves: a worker that was paused
            // past its lease (SIGSTOP, a long GC) must not send what another worker owns now
            await this.#holdLease();
            if (plan.completion) {
              const handed = await this.#handOver(seq, plan.completion, plan, context);
              if (handed === "awaiting") return handed;
              known = handed;
            } else {
              const value = await plan.invoke(context);
              known = { outcome: { ok: true, value }, secret: plan.secret?.(value) ?? false };
            }
          } catch (e) {
            known = { outcome: { ok: false, error: toCallError(e) }, secret: false };
          }
          // no extra await unless a retry is journaled: an outcome that is in before the
          // invocation suspends must be journaled by it, not cut off and sent again
          return this.#retries(plan, known)
            ? await this.#afterAttempt(seq, plan, context.attempt, known)
            : known;
        })();
        this.#launch(seq, work, call);
        return { kind: "running" };
      }
    }
  }

  async #record(
    call: HostCall,
    mode: "inline" | "durable",
    wakeAt?: Date,
    journalArgs?: Json[],
  ): Promise<CallRecord> {
    return await this.#store.recordCall(this.#lease, {
      seq: call.id,
      service: call.service,
      path: call.path,
      args: this.#secrets.json(journalArgs ?? call.args),
      mode,
      wakeAt: wakeAt ?? null,
    }, this.#now);
  }

  /**
   * Runs a call in this process; when it settles it becomes ready, stamped with the time, or
   * (a failed attempt to retry, already journaled) waits for its retry; an asynchronous
   * call, once its service acknowledged it, waits for its completion.
   */
  #launch(seq: number, work: Promise<Known | "awaiting">, call?: HostCall): void {
    work.then((known) => {
      const entry = this.#calls.get(seq);
      if (entry?.wait.kind !== "running") return; // the invocation ended meanwhile
      if (known === "awaiting") {
        entry.wait = { kind: "completion" };
      } else {
        const { outcome, secret, retryAt } = known;
        entry.wait = retryAt !== undefined && call
          ? { kind: "retry", wakeAt: retryAt, hold: this.#holdsRetry(retryAt), call }
          : { kind: "ready", outcome, secret, at: this.#now.getTime(), journaled: false };
      }
      this.#wake?.("settled");
    });
  }

  // ---- retries of a service's calls (engine/retry.ts) ----------------------------------------

  /**
   * After an attempt of an invoked call: a failure its policy retries, with attempts left, is
   * journaled as pending until the next attempt's due time (quickjs.retry_call) before the
   * invocation learns of it, so a crash during the backoff neither repeats nor forgets it.
   */
  async #afterAttempt(
    seq: number,
    plan: ToolPlan & { kind: "invoke" },
    attempt: number,
    known: Known,
  ): Promise<Known> {
    const policy = plan.retry;
    if (known.outcome.ok || !policy) return known;
    const error = known.outcome.error;
    if (attempt >= policy.attempts) {
      if (policy.attempts > 1) this.#system(`call ${seq} failed after ${attempt} attempts`);
      return known;
    }
    const delayMs = retryDelayMs(policy, attempt);
    const retryAt = this.#now.getTime() + delayMs;
    this.#system(
      `call ${seq} attempt ${attempt} of ${policy.attempts} failed (${error.code}); ` +
        `attempt ${attempt + 1} in ${delayMs} ms`,
    );
    this.#collectLogs();
    try {
      await this.#store.retryCall(this.#lease, {
        seq,
        error: error as unknown as Json,
        wakeAt: new Date(retryAt),
        logs: this.#logs.splice(0),
      }, this.#now);
    } catch (e) {
      // the retry could not be journaled: this invocation cannot go on (another continues
      // from the last snapshot, and the journal counts the attempt that was made)
      this.#abort.abort(
        new LeaseLost(`retry of call ${seq} not journaled: ${(e as Error).message}`),
      );
      return known;
    }
    return { ...known, retryAt };
  }

  /** Whether a failed attempt is one its service's policy retries (attempts aside). */
  #retries(plan: ToolPlan & { kind: "invoke" }, known: Known): boolean {
    return !known.outcome.ok && plan.retry !== undefined &&
      isRetryable(plan.retry, known.outcome.error);
  }

  /** A short backoff waits in this process, like a short sleep; a long one suspends the run. */
  #holdsRetry(retryAt: number): boolean {
    const ms = retryAt - this.#now.getTime();
    return !this.#engine.durableAll && ms <= this.#engine.inlineSleepMaxMs &&
      ms < this.#wallLeftMs();
  }

  /** A journaled call waiting for its next attempt (pending, its last error, a due time). */
  #retryWaitOf(record: CallRecord, call: HostCall, now: Date): Wait | undefined {
    if (record.status !== "pending" || !record.error || !record.wakeAt) return undefined;
    const wakeAt = Date.parse(record.wakeAt);
    if (wakeAt <= now.getTime()) return undefined;
    return { kind: "retry", wakeAt, hold: this.#holdsRetry(wakeAt), call };
  }

  /** Sends the retries this invocation holds whose time has come: their next attempt. */
  async #startDueRetries(now: number): Promise<void> {
    for (const entry of this.#calls.values()) {
      const wait = entry.wait;
      if (wait.kind !== "retry" || !wait.hold || wait.wakeAt > now) continue;
      if (entry.fresh && this.#engine.durableAll) continue;
      const plan = await this.#engine.tools.plan(wait.call, this.#run.allowedTools, this.#now);
      entry.wait = await this.#start(wait.call, plan, { forceInline: true });
    }
  }

  /**
   * Sends an asynchronous call with a fresh completion token, whose hash is journaled first
   * (a completion may race the acknowledgement); a re-send (after a crash, say) carries a
   * new token and only that one completes the call. "awaiting" once acknowledged, or the
   * outcome if the completion already came.
   */
  async #handOver(
    seq: number,
    completion: { timeoutMs: number },
    plan: { invoke: (context: ToolCallContext) => Promise<Json | undefined> },
    context: ToolCallContext,
  ): Promise<Known | "awaiting"> {
    const token = completionToken();
    const issued = await this.#store.issueCompletion(
      this.#lease,
      seq,
      await sha256Hex(token),
      this.#now,
    );
    const deadline = new Date(this.#now.getTime() + completion.timeoutMs);
    const tools = this.#engine.tools;
    const url = tools.completionUrl(this.#run.id, seq);
    const heartbeatUrl = tools.completionUrl(this.#run.id, seq, "heartbeat");
    await plan.invoke({
      ...context,
      completion: {
        token,
        ...(url ? { url } : {}),
        deadlineAt: deadline.toISOString(),
        ...(heartbeatUrl ? { heartbeatUrl } : {}),
        // the service's setting, fixed on the call by issue_completion (SQL holds it to it)
        ...(issued.heartbeatTimeoutMs ? { heartbeatTimeoutMs: issued.heartbeatTimeoutMs } : {}),
        // sent again (a crash, a cut-off): the service may continue from its last progress
        ...(issued.heartbeatAt
          ? {
            lastHeartbeat: {
              at: issued.heartbeatAt,
              ...(issued.heartbeatDetails !== undefined
                ? { details: issued.heartbeatDetails }
                : {}),
            },
          }
          : {}),
      },
    });
    const record = await this.#store.completionSent(this.#lease, seq, deadline, this.#now);
    if (record.status === "succeeded" || record.status === "failed") {
      return { outcome: outcomeOf(record), secret: false };
    }
    return "awaiting";
  }

  /**
   * The next call to deliver: of the ready calls and the sleeps that are due, the earliest
   * (a call by when it settled, a sleep by its deadline, as timers fire). One pass over
   * the table, no allocation. With durableAll, calls made in this invocation are never
   * delivered in it: each of the task's awaits crosses a snapshot and a restore.
   */
  #nextReady(now: number): CallEntry | undefined {
    let best: CallEntry | undefined;
    let bestAt = Infinity;
    for (const entry of this.#calls.values()) {
      if (entry.fresh && this.#engine.durableAll) continue;
      const wait = entry.wait;
      const at = wait.kind === "ready"
        ? wait.at
        : wait.kind === "timer" && wait.wakeAt <= now
        ? wait.wakeAt
        : Infinity;
      if (at < bestAt || (at === bestAt && best && entry.seq < best.seq)) {
        best = entry;
        bestAt = at;
      }
    }
    return best;
  }

  /** Whether anything in this process can still settle a call this invocation delivers. */
  #worthWaiting(): boolean {
    for (const { wait, fresh } of this.#calls.values()) {
      if (fresh && this.#engine.durableAll) continue;
      if (wait.kind === "running" || (wait.kind === "timer" && wait.hold)) return true;
      if (wait.kind === "retry" && wait.hold) return true;
    }
    return false;
  }

  /**
   * Waits for the next call to deliver; "parked" when nothing here can settle one (the run
   * waits on durable calls only), "budget" when the wall budget runs out or the worker asks
   * for the run back first.
   */
  async #waitForNext(): Promise<CallEntry | "parked" | "budget"> {
    for (;;) {
      await this.#startDueRetries(this.#now.getTime());
      const now = this.#now.getTime();
      const next = this.#nextReady(now);
      if (next) return next;
      if (!this.#worthWaiting()) return "parked";
      let nextTimer = Infinity;
      for (const { wait } of this.#calls.values()) {
        if ((wait.kind === "timer" || wait.kind === "retry") && wait.wakeAt < nextTimer) {
          nextTimer = wait.wakeAt;
        }
      }
      // the signals' listeners belong to the invocation (added once, removed at its end);
      // a wait only adds a timer and a sleep, both gone when it ends
      const wait = new AbortController();
      const outcome = await new Promise<"settled" | "budget" | "lost">((resolve) => {
        this.#wake = resolve;
        const budget = setTimeout(() => resolve("budget"), Math.max(0, this.#wallLeftMs()));
        wait.signal.addEventListener("abort", () => clearTimeout(budget), { once: true });
        if (Number.isFinite(nextTimer)) {
          this.#engine.clock.sleep(nextTimer - now, wait.signal).then(
            () => resolve("settled"),
            () => {},
          );
        }
        if (this.#abort.signal.aborted) resolve("lost");
        if (this.#yield?.aborted || this.#engine.isolate.unloading.aborted) resolve("budget");
      });
      wait.abort(WAIT_OVER); // a reason of our own: abort() alone builds a DOMException
      this.#wake = undefined;
      if (outcome === "lost") throw new LeaseLost(String(this.#abort.signal.reason ?? "aborted"));
      if (outcome === "budget") return "budget";
    }
  }

  /**
   * Journals a call's outcome (unless the journal has it), hands it to the task, and runs
   * the task until it is idle again. The journal always knows an outcome before the task.
   */
  async #deliver(entry: CallEntry): Promise<VmState> {
    const known = this.#outcomeOf(entry);
    if (!known.journaled) await this.#settleInJournal(entry.seq, known.outcome, known.secret);
    this.#calls.delete(entry.seq);
    const vm = this.#vm!;
    if (!vm.settle(entry.seq, known.outcome, { secret: known.secret })) {
      this.#system(`call ${entry.seq} settled but the task was not waiting for it`);
    }
    if (known.secret) this.#secrets.learn(vm.secretValues());
    return vm.run();
  }

  /** A deliverable entry's outcome: a due sleep resolves with undefined. */
  #outcomeOf(entry: CallEntry): Known & { journaled: boolean } {
    const wait = entry.wait;
    if (wait.kind === "ready") {
      const path = wait.outcome.ok && !wait.journaled
        ? unstorablePath(wait.outcome.value)
        : undefined;
      if (path) {
        // a tool answered with a string the journal cannot hold: the task gets a named error
        const message = notStorableMessage("the call's result", path);
        return {
          outcome: { ok: false, error: { name: "ToolError", code: "VALUE_NOT_STORABLE", message } },
          secret: false,
          journaled: false,
        };
      }
      return wait;
    }
    return { outcome: { ok: true }, secret: false, journaled: false };
  }

  /** Writes an outcome to the journal, with the log lines so far, before the task sees it. */
  async #settleInJournal(seq: number, outcome: CallOutcome, secret: boolean): Promise<void> {
    this.#collectLogs();
    const unjournaled = this.#unjournaled.get(seq);
    if (unjournaled) {
      await this.#store.recordSettledCall(this.#lease, {
        seq,
        service: unjournaled.call.service,
        path: unjournaled.call.path,
        args: unjournaled.call.args,
        ok: outcome.ok,
        result: outcome.ok ? outcome.value ?? null : undefined,
        error: outcome.ok ? undefined : outcome.error as unknown as Json,
        startedAt: unjournaled.startedAt,
        logs: this.#logs.splice(0),
      }, this.#now);
      this.#unjournaled.delete(seq);
      return;
    }
    await this.#store.settleCall(this.#lease, {
      seq,
      ok: outcome.ok,
      result: outcome.ok
        ? (secret ? SECRET_MARKER : this.#secrets.json(outcome.value ?? null))
        : undefined,
      error: outcome.ok ? undefined : this.#secrets.json(outcome.error as unknown as Json),
      logs: this.#logs.splice(0),
    }, this.#now);
  }

  // ---- park, snapshot, suspend or end -------------------------------------------------------

  async #complete(value: Json): Promise<InvocationResult> {
    const result = this.#secrets.json(value);
    const path = unstorablePath(result);
    if (path) {
      return await this.#fail({
        code: "VALUE_NOT_STORABLE",
        name: "ResultError",
        message: notStorableMessage("the task's result", path),
      });
    }
    this.#collectLogs();
    await this.#store.completeRun(this.#lease, result, this.#logs.splice(0), this.#now);
    this.#engine.onEvent({ type: "completed", runId: this.#run.id });
    return { ...this.#result("completed"), result };
  }

  async #fail(error: RunError): Promise<InvocationResult> {
    this.#collectLogs();
    const stored = storableError(
      this.#secrets.json(error as unknown as Json) as unknown as RunError,
    );
    const view = await this.#store.failRun(this.#lease, stored, this.#logs.splice(0), this.#now);
    // a task-level @retry may have queued the run again for its next attempt (restart_run)
    if (view.status === "failed") this.#engine.onEvent({ type: "failed", runId: this.#run.id });
    return { ...this.#result(view.status), error: stored };
  }

  /** The last resort when the database refused a write: fail the run, without the logs. */
  async #failOnDataError(e: StoreError): Promise<InvocationResult> {
    const error: RunError = {
      code: "VALUE_NOT_STORABLE",
      name: "StoreError",
      message: storableText(
        this.#secrets.text(`the database refused a value of this run: ${e.message}`),
      ),
    };
    this.#logs = [];
    await this.#store.failRun(this.#lease, error, [], this.#now);
    this.#engine.onEvent({ type: "failed", runId: this.#run.id });
    return { ...this.#result("failed"), error };
  }

  /**
   * Saves the VM and parks the run: until its earliest sleep, until a child ends, or (budget
   * spent, checkpoint, deferred call, call cut off) to be continued at once.
   */
  async #suspend(reason: "parked" | "budget"): Promise<InvocationResult> {
    const vm = this.#vm!;
    const t0 = performance.now();
    // a one-write call still running is parked in the snapshot: it needs its entry
    for (const [seq, { call }] of this.#unjournaled) {
      if (this.#calls.get(seq)?.wait.kind !== "running") continue;
      await this.#record(call, "inline");
      this.#unjournaled.delete(seq);
    }
    // outcomes that arrived but were not delivered: journal them, the next invocation
    // delivers them from there instead of running the calls again
    for (const entry of this.#calls.values()) {
      const wait = entry.wait;
      if (wait.kind === "ready" && !wait.journaled) {
        const known = this.#outcomeOf(entry);
        await this.#settleInJournal(entry.seq, known.outcome, known.secret);
        entry.wait = { ...wait, journaled: true };
      }
    }
    const snapshot = await takeSnapshot(vm, {
      runId: this.#run.id,
      key: this.#engine.snapshotKeys[0],
    });
    const parked = snapshot.header.parkedCalls;
    const children: string[] = [];
    const completions: number[] = [];
    let wakeAt: number | null = null;
    let now = reason === "budget";
    for (const seq of parked) {
      const wait = this.#calls.get(seq)?.wait;
      if (wait?.kind === "timer" || wait?.kind === "retry") {
        if (wakeAt === null || wait.wakeAt < wakeAt) wakeAt = wait.wakeAt;
      } else if (wait?.kind === "child") children.push(wait.childRunId);
      else if (wait?.kind === "completion") completions.push(seq);
      // running here (it runs again), ready (delivered from the journal), next: at once
      else now = true;
    }
    const wake = now ? this.#now : wakeAt === null ? null : new Date(wakeAt);
    const waitingOn: WaitingOn = { calls: parked };
    if (children.length) waitingOn.children = children;
    if (completions.length) waitingOn.completions = completions;
    if (wake) waitingOn.wakeAt = wake.toISOString();
    if (reason === "budget" && this.#engine.isolate.unloading.aborted) {
      this.#system(
        `handed over by ${this.#engine.workerId}: ${this.#engine.isolate.unloading.reason.message}`,
      );
    } else if (reason === "budget" && this.#yield?.aborted) {
      this.#system(`handed over by ${this.#engine.workerId} (shutting down)`);
    } else if (reason === "budget") {
      this.#system(
        `invocation budget spent (${Math.round(vm.cpuMs)} ms in the VM, ` +
          `${Math.round(performance.now() - this.#started)} ms in all): continuing in a new one`,
      );
    }
    this.#collectLogs();
    const view = await this.#store.suspendRun(this.#lease, {
      snapshot: snapshot.bytes,
      header: snapshot.header,
      wakeAt: wake,
      waitingOn,
      logs: this.#logs.splice(0),
    }, this.#now);
    this.#engine.onEvent({
      type: "suspended",
      runId: this.#run.id,
      bytes: snapshot.bytes.length,
      wakeAt: wake?.toISOString() ?? null,
      ms: performance.now() - t0,
    });
    return {
      ...this.#result(view.status),
      wakeAt: view.wakeAt ?? null,
      snapshotBytes: snapshot.bytes.length,
    };
  }

  #result(status: InvocationResult["status"]): InvocationResult {
    return {
      runId: this.#run.id,
      task: this.#run.task,
      status,
      restored: this.#restored,
      cpuMs: this.#vm?.cpuMs ?? 0,
      wallMs: performance.now() - this.#started,
    };
  }

  // ---- one write per in-process call (CustomTool.journalAfter) -------------------------------
  //
  // An in-process tool answers in microseconds, so its two locked transactions (record_call
  // before, settle_call after) were most of a step's cost. When the tool opts in and the
  // journal surely has no entry at the call's seq (the claim returned every entry after the
  // snapshot, seqs only grow, and no other worker writes while the lease holds), nothing is
  // written before the call: its idempotency key is what record_call would give it. Its
  // outcome is journaled with the call in one write (#settleInJournal) before the task sees
  // it, so a settled call is still never run twice; what the tool gives up is said at
  // CustomTool. A suspension while such a call runs records it as started first (#suspend).

  #journalsAfter(
    call: HostCall,
    plan: Extract<ToolPlan, { kind: "invoke" }>,
    options: { forceInline?: boolean },
  ): boolean {
    if (!plan.journalAfter || plan.journalArgs || plan.secret) return false;
    // a call that would be deferred, or one run again from the journal, takes the usual path
    if (options.forceInline || this.#engine.durableAll || plan.timeoutMs > this.#wallLeftMs()) {
      return false;
    }
    this.#journalTop ??= this.#run.calls.reduce((top, c) => Math.max(top, c.seq), 0);
    return call.id > this.#journalTop;
  }

  #startUnjournaled(call: HostCall, plan: Extract<ToolPlan, { kind: "invoke" }>): Wait {
    const seq = call.id;
    this.#unjournaled.set(seq, { call, startedAt: this.#now });
    const context: ToolCallContext = {
      runId: this.#run.id,
      seq,
      // what quickjs.claim_seq gives a call at a seq the journal has no entry for
      idempotencyKey: `${this.#run.id}:${seq}`,
      attempt: 1,
      signal: this.#abort.signal,
    };
    const work = (async (): Promise<Known> => {
      await this.#holdLease();
      const value = await plan.invoke(context);
      return { outcome: { ok: true, value }, secret: false };
    })().catch((e): Known => ({ outcome: { ok: false, error: toCallError(e) }, secret: false }));
    this.#launch(seq, work);
    return { kind: "running" };
  }

  // ---- budget, lease, logs -----------------------------------------------------------------

  /** The wall time a fresh invocation has: its budget, within a fresh worker's life. */
  #fullWallMs(): number {
    const { wallMs, wallMarginMs } = this.#engine.isolate.limits;
    return Math.min(this.#engine.budget.wallMs, wallMs - wallMarginMs);
  }

  /** Wall time left: of the invocation's budget, and of the worker's life. */
  #wallLeftMs(): number {
    const own = this.#engine.budget.wallMs - (performance.now() - this.#started);
    return Math.min(own, this.#engine.isolate.wallLeftMs());
  }

  /**
   * The invocation's CPU budget counts time inside its VM (concurrent invocations must not
   * spend each other's); the worker's limit counts all the process spent (gzip, JSON, TLS…).
   */
  #budgetSpent(): boolean {
    const isolate = this.#engine.isolate;
    return this.#yield?.aborted === true || isolate.unloading.aborted ||
      this.#wallLeftMs() <= 0 || (this.#vm?.cpuMs ?? 0) >= this.#engine.budget.cpuMs ||
      this.#vm?.hostBytesSpent === true ||
      isolate.cpuLeftMs() <= 0;
  }

  #startHeartbeat(): void {
    const every = (this.#engine.leaseSeconds * 1000) / 3;
    this.#heartbeat = setInterval(() => this.#renewLease().catch(() => {}), every);
  }

  /** Extends the lease; a lease another worker holds now ends this invocation. */
  async #renewLease(): Promise<void> {
    const sent = performance.now();
    try {
      await this.#store.heartbeat(this.#lease, this.#engine.leaseSeconds, this.#now);
      this.#leaseFrom = Math.max(this.#leaseFrom, sent);
    } catch (e) {
      if (e instanceof StoreError && (e.code === "STALE_LEASE" || e.code === "RUN_NOT_FOUND")) {
        this.#abort.abort(new LeaseLost(e.message));
      }
      // other errors: the database may be back by the next beat
      throw e;
    }
  }

  /**
   * Before a call leaves the process: the lease must surely still be this worker's. Inside
   * two thirds of the lease since it was last set, that is known without asking; past it (a
   * paused process, a heartbeat that failed) the lease is renewed first, or the invocation
   * ends as lost and the call is never sent.
   */
  async #holdLease(): Promise<void> {
    const leaseMs = this.#engine.leaseSeconds * 1000;
    if (performance.now() - this.#leaseFrom < (leaseMs * 2) / 3) return;
    try {
      await this.#renewLease();
    } catch (e) {
      this.#abort.abort(
        e instanceof LeaseLost ? e : new LeaseLost(`lease not renewed: ${(e as Error).message}`),
      );
    }
    this.#checkLease();
  }

  #checkLease(): void {
    if (this.#abort.signal.aborted) {
      throw new LeaseLost(String(this.#abort.signal.reason ?? "aborted"));
    }
  }

  #collectLogs(): void {
    const vm = this.#vm;
    if (!vm || vm.disposed) return;
    for (const entry of vm.takeLogs()) {
      const message = storableText(this.#secrets.text(entry.message));
      this.#logs.push({ level: entry.level, message, at: entry.at });
    }
  }

  async #flushLogs(): Promise<void> {
    if (this.#logs.length) await this.#store.appendLogs(this.#lease, this.#logs.splice(0));
  }

  #system(message: string): void {
    this.#logs.push({
      level: "system",
      message: this.#secrets.text(message),
      at: this.#now.getTime(),
    });
  }
}

/** A run's error with its text made storable (a task may throw any string). */
function storableError(error: RunError): RunError {
  return {
    ...error,
    name: storableText(error.name),
    message: storableText(error.message),
    ...(error.stack !== undefined ? { stack: storableText(error.stack) } : {}),
    ...(error.cause !== undefined ? { cause: storableError(error.cause) } : {}),
  };
}

function secretToChild(): CallError {
  return {
    name: "ToolError",
    code: "SECRET_TO_CHILD",
    message: "a child run's input may not hold a secret (it is stored as the child's input): " +
      "pass the kv key and let the child read the secret itself",
  };
}

function secretCallInterrupted(): CallError {
  return {
    name: "ToolError",
    code: "SECRET_CALL_INTERRUPTED",
    message: "the call's arguments held a secret and it was cut off by a suspension: the " +
      "journal keeps them redacted only, so it is not sent again; make the call again",
  };
}

function outcomeOf(call: CallRecord): CallOutcome {
  if (call.status === "succeeded") return { ok: true, value: call.result ?? null };
  const error = (call.error ?? {}) as Partial<CallError>;
  return {
    ok: false,
    error: {
      name: error.name ?? "Error",
      message: error.message ?? "the call failed",
      ...(error.code ? { code: error.code } : {}),
      ...(error.data !== undefined ? { data: error.data } : {}),
    },
  };
}

/** 32 random bytes, base64url: what a service completes an asynchronous call with. */
function completionToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_")
    .replace(/=+$/, "");
}

async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}
