/**
 * The run loop: claim a run, get its VM (fresh, or restored from its snapshot with the
 * results that arrived meanwhile), run it, journal and carry out every host call, and end
 * the invocation with exactly one transition: complete, fail, or suspend with a reason to
 * wake. A run is never left "running" with an idle VM.
 *
 * The engine does no I/O of its own: the database is the Store, the world is the tools.
 */
import { type CallOutcome, type HostCall, type Json, TaskVm, type VmState } from "../sandbox/vm.ts";
import { restoreSnapshot, takeSnapshot } from "../sandbox/snapshot.ts";
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
import type { RunStatus } from "./states.ts";
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
  /** Bounds the VMs alive at once by their wasm memory (default: the isolate's, admission.ts). */
  admission?: MemoryAdmission;
}

export type EngineEvent =
  | { type: "started" | "restored"; runId: string; attempt: number; ms: number }
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
  readonly admission: MemoryAdmission;

  constructor(config: EngineConfig) {
    this.store = config.store;
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
  }

  /** Claims due runs (or the one given) and runs each for one invocation, concurrently. */
  async claimAndRun(
    options: { runId?: string; limit?: number } & InvocationSignals = {},
  ): Promise<InvocationResult[]> {
    const claimed = await this.store.claimRuns({
      worker: this.workerId,
      // no more runs than VMs fit now (waiting until one does): the rest stay queued
      limit: await this.admission.capacity(await freshVmBytes(resolveLimits()), options.limit ?? 1),
      leaseSeconds: this.leaseSeconds,
      runId: options.runId,
      now: this.clock.now(),
    });
    // one run's trouble (the database gone mid-run) must not hide the others' results
    return await Promise.all(
      claimed.map((run) =>
        this.runClaimed(run, options).catch((e): InvocationResult => ({
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
}

/** Marks the end of an invocation that lost its lease; unwinds to Invocation.run. */
class LeaseLost extends Error {
  override name = "LeaseLost";
}

/** An outcome to hand to the task; `secret`: the task may use it, logs must not show it. */
type Delivery = { outcome: CallOutcome; secret: boolean };

/** An in-process call's outcome; `at` (ms on the engine's clock) orders deliveries. */
type Settled = { seq: number; outcome: CallOutcome; secret: boolean; at: number };

/** What a parked call waits for while nothing in this process works on it. */
type DurableWait =
  | { kind: "child"; childRunId: string }
  | { kind: "now" }; // a checkpoint, or a call deferred to the next invocation

/**
 * A sleep this invocation knows of. `hold`: the invocation waits for it (a short sleep);
 * otherwise it is delivered only if it comes due while the invocation runs anyway, and
 * a suspension wakes at it.
 */
type Timer = { wakeAt: Date; hold: boolean };

const LOG_FLUSH_LINES = 200;

class Invocation {
  readonly #engine: Engine;
  readonly #run: ClaimedRun;
  readonly #lease: Lease;
  readonly #limits: SandboxLimits;
  #badLimits: string | undefined;
  readonly #abort = new AbortController();
  readonly #started = performance.now();
  #vm: TaskVm | undefined;
  #journal = new Map<number, CallRecord>();
  /** Calls executing in this process. */
  #inflight = new Set<number>();
  /** In-process calls that settled and wait to be delivered, earliest first. */
  #ready: Settled[] = [];
  /** Sleeps by seq; delivered in deadline order as they come due, like timers. */
  #timers = new Map<number, Timer>();
  #onSettled: (() => void) | undefined;
  #durable = new Map<number, DurableWait>();
  #logs: LogLine[] = [];
  #restored = false;
  #heartbeat: ReturnType<typeof setInterval> | undefined;

  readonly #yield: AbortSignal | undefined;

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
    for (const call of run.calls) this.#journal.set(call.seq, call);
    const abort = signals.abort;
    abort?.addEventListener("abort", () => this.#abort.abort(abort.reason), { once: true });
    this.#yield = signals.yield;
  }

  get #store(): Store {
    return this.#engine.store;
  }

  get #now(): Date {
    return this.#engine.clock.now();
  }

  /** The task's Date.now(): the engine's clock, in which its sleeps are measured. */
  readonly #taskClock = () => this.#engine.clock.now().getTime();

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
      // The engine itself failed (database unreachable, a bug): leave the run to the lease
      // expiry, which hands it to another worker from its last snapshot.
      throw e;
    } finally {
      clearInterval(this.#heartbeat);
      this.#abort.abort(new LeaseLost("invocation ended"));
      if (this.#vm && !this.#vm.disposed) this.#vm.dispose();
      memory?.release(this.#vm?.instance.memory); // counted until V8 frees it
    }
  }

  // ---- opening the VM -------------------------------------------------------------------

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
      try {
        this.#vm = await restoreSnapshot(run.snapshot, { now: this.#taskClock });
      } catch (e) {
        if (e instanceof SandboxError) return { kind: "failed", error: e.toRunError() };
        throw e;
      }
      this.#restored = true;
      this.#engine.onEvent({
        type: "restored",
        runId: run.id,
        attempt: run.attempts,
        ms: performance.now() - t0,
      });
      this.#system(`restored the VM (attempt ${run.attempts})`);
      return await this.#resumeParked(run.snapshotHeader?.parkedCalls ?? []);
    }
    this.#vm = await TaskVm.create({ limits: this.#limits, now: this.#taskClock });
    if (run.attempts > 1) this.#system(`started from the top (attempt ${run.attempts})`);
    const state = this.#vm.start(
      { code: run.code, filename: `${run.task}.js` },
      run.input,
      { runId: run.id, task: run.task, attempt: run.attempts },
    );
    this.#engine.onEvent({
      type: "started",
      runId: run.id,
      attempt: run.attempts,
      ms: performance.now() - t0,
    });
    return state;
  }

  /**
   * After a restore: deliver what arrived while the run slept (sleeps in deadline order,
   * other calls in the order they completed), re-run calls that were cut off, and keep
   * waiting for the rest.
   */
  async #resumeParked(parked: number[]): Promise<VmState> {
    const now = this.#now;
    const ready: ({ seq: number; at: number } & Delivery)[] = [];
    for (const seq of parked) {
      const call = this.#journal.get(seq);
      if (!call) throw new Error(`the journal has no entry for parked call ${seq}`);
      const settled = call.status === "succeeded" || call.status === "failed";
      if (settled && !isSecretMarker(call.result)) {
        const at = call.service === "sleep" && call.wakeAt ? call.wakeAt : call.completedAt!;
        ready.push({ seq, at: Date.parse(at), outcome: outcomeOf(call), secret: false });
      } else if (call.service === "sleep" || call.service === "checkpoint") {
        const wakeAt = call.wakeAt ? new Date(call.wakeAt) : now;
        if (wakeAt <= now) {
          await this.#settleInJournal(seq, { ok: true }, false);
          ready.push({ seq, at: wakeAt.getTime(), outcome: { ok: true }, secret: false });
        } else {
          this.#timers.set(seq, { wakeAt, hold: false });
        }
      } else if (call.childRunId) {
        this.#durable.set(seq, { kind: "child", childRunId: call.childRunId });
      } else {
        // an external call cut off by the last suspension, deferred to this invocation, or a
        // secret read (the journal keeps only a marker): run it now
        const again: HostCall = {
          id: seq,
          service: call.service,
          path: call.path,
          args: call.args,
        };
        const plan = await this.#engine.tools.plan(again, this.#run.allowedTools, now);
        const known = await this.#start(again, plan, { forceInline: true });
        if (known) ready.push({ seq, at: now.getTime(), ...known });
      }
    }
    ready.sort((a, b) => a.at - b.at || a.seq - b.seq);
    let state = this.#vm!.state();
    for (const { seq, outcome, secret } of ready) state = this.#deliver(seq, outcome, secret);
    return state;
  }

  // ---- the loop ---------------------------------------------------------------------------

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
      if (this.#inflight.size === 0 && this.#ready.length === 0 && !this.#timerToWaitFor()) {
        return await this.#suspend("parked");
      }
      const next = await this.#nextSettled();
      if (next === "budget") return await this.#suspend("budget");
      await this.#settleInJournal(next.seq, next.outcome, next.secret);
      state = this.#deliver(next.seq, next.outcome, next.secret);
    }
  }

  /** Journals the calls the last slice made, starts them, delivers replayed outcomes. */
  async #acceptNewCalls(state: VmState): Promise<VmState> {
    if (!this.#vm) return state;
    const calls = this.#vm.takeCalls();
    if (calls.length === 0) return state;
    const replayed: ({ seq: number } & Delivery)[] = [];
    const now = this.#now;
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
      const known = await this.#start(call, plan, {});
      if (known) replayed.push({ seq: call.id, ...known });
    }
    for (const { seq, outcome, secret } of replayed) state = this.#deliver(seq, outcome, secret);
    return state;
  }

  /**
   * Journals one call and sets it going. Returns its outcome when it is already known
   * (settled in the journal by an earlier attempt, or failed at once).
   */
  async #start(
    call: HostCall,
    plan: ToolPlan,
    options: { forceInline?: boolean },
  ): Promise<Delivery | undefined> {
    const seq = call.id;
    const engine = this.#engine;
    const now = this.#now;
    switch (plan.kind) {
      case "reject": {
        const record = await this.#record(call, "inline");
        if (record.replayed) return { outcome: outcomeOf(record), secret: false };
        await this.#settleInJournal(seq, { ok: false, error: plan.error }, false);
        return { outcome: { ok: false, error: plan.error }, secret: false };
      }
      case "checkpoint": {
        const record = await this.#record(call, "durable", now);
        if (record.replayed) return { outcome: outcomeOf(record), secret: false };
        this.#durable.set(seq, { kind: "now" });
        return undefined;
      }
      case "sleep": {
        const ms = plan.wakeAt.getTime() - now.getTime();
        const inline = !engine.durableAll && ms <= engine.inlineSleepMaxMs &&
          ms < this.#wallLeftMs();
        const record = await this.#record(call, inline ? "inline" : "durable", plan.wakeAt);
        if (record.replayed) return { outcome: outcomeOf(record), secret: false };
        // a sleep made again after a crash keeps its first deadline
        const wakeAt = record.wakeAt ? new Date(record.wakeAt) : plan.wakeAt;
        this.#timers.set(seq, { wakeAt, hold: inline });
        return undefined;
      }
      case "child": {
        const record = this.#remember(
          await this.#store.startChild(this.#lease, {
            seq,
            task: plan.task,
            input: plan.input,
            maxDepth: engine.maxChildDepth,
          }, now),
        );
        if (record.status === "succeeded" || record.status === "failed") {
          return { outcome: outcomeOf(record), secret: false };
        }
        this.#durable.set(seq, { kind: "child", childRunId: record.childRunId! });
        return undefined;
      }
      case "invoke": {
        // a call whose journaled args are redacted (a secret write) must run now: later
        // there would be only the redacted args to run it with
        const defer = !options.forceInline && !plan.journalArgs &&
          (engine.durableAll || plan.timeoutMs > this.#wallLeftMs());
        const record = await this.#record(
          call,
          defer ? "durable" : "inline",
          undefined,
          plan.journalArgs,
        );
        // a secret read is never delivered from the journal (it holds a marker): run it again
        if (record.replayed && !isSecretMarker(record.result)) {
          return { outcome: outcomeOf(record), secret: false };
        }
        if (defer) {
          this.#durable.set(seq, { kind: "now" });
          return undefined;
        }
        const context: ToolCallContext = {
          runId: this.#run.id,
          seq,
          idempotencyKey: record.idempotencyKey,
          attempt: Math.max(record.attempts, 1),
          signal: this.#abort.signal,
        };
        const work = (async (): Promise<Delivery> => {
          const value = await plan.invoke(context);
          return { outcome: { ok: true, value }, secret: plan.secret?.(value) ?? false };
        })().catch((e): Delivery => ({
          outcome: { ok: false, error: toCallError(e) },
          secret: false,
        }));
        if (plan.immediate) {
          const done = await work;
          await this.#settleInJournal(seq, done.outcome, done.secret);
          return done;
        }
        this.#launch(seq, work);
        return undefined;
      }
    }
  }

  async #record(
    call: HostCall,
    mode: "inline" | "durable",
    wakeAt?: Date,
    journalArgs?: Json[],
  ): Promise<CallRecord> {
    return this.#remember(
      await this.#store.recordCall(this.#lease, {
        seq: call.id,
        service: call.service,
        path: call.path,
        args: journalArgs ?? call.args,
        mode,
        wakeAt: wakeAt ?? null,
      }, this.#now),
    );
  }

  #remember(record: CallRecord): CallRecord {
    this.#journal.set(record.seq, record);
    return record;
  }

  /** Writes an outcome to the journal before the task sees it. */
  async #settleInJournal(seq: number, outcome: CallOutcome, secret: boolean): Promise<void> {
    this.#collectLogs();
    const record = await this.#store.settleCall(this.#lease, {
      seq,
      ok: outcome.ok,
      result: outcome.ok ? (secret ? SECRET_MARKER : outcome.value ?? null) : undefined,
      error: outcome.ok ? undefined : outcome.error as unknown as Json,
      logs: this.#logs.splice(0),
    }, this.#now);
    this.#remember(record);
  }

  /** Hands an outcome to the task and runs it until it is idle again. */
  #deliver(seq: number, outcome: CallOutcome, secret = false): VmState {
    const vm = this.#vm!;
    if (!vm.settle(seq, outcome, { secret })) {
      this.#system(`call ${seq} settled but the task was not waiting for it`);
    }
    return vm.run();
  }

  /** A short sleep still to wait out, or any sleep already due. */
  #timerToWaitFor(): boolean {
    const now = this.#now.getTime();
    for (const timer of this.#timers.values()) {
      if (timer.hold || timer.wakeAt.getTime() <= now) return true;
    }
    return false;
  }

  /** Runs a call in this process; its outcome joins the ready queue when it settles. */
  #launch(seq: number, work: Promise<Delivery & { at?: number }>) {
    this.#inflight.add(seq);
    work.then((settled) => {
      if (!this.#inflight.delete(seq)) return;
      this.#ready.push({ seq, ...settled, at: settled.at ?? this.#now.getTime() });
      this.#onSettled?.();
    });
  }

  /**
   * The next outcome to deliver: of the in-process calls that settled and the short sleeps
   * that are due, the earliest (a call by when it settled, a sleep by its deadline, as
   * timers fire), or "budget" when the wall budget runs out first.
   */
  async #nextSettled(): Promise<Settled | "budget"> {
    for (;;) {
      const now = this.#now.getTime();
      const due: Settled[] = [...this.#timers].filter(([, t]) => t.wakeAt.getTime() <= now)
        .map(([seq, t]) => ({ seq, outcome: { ok: true }, secret: false, at: t.wakeAt.getTime() }));
      const candidates = [...this.#ready, ...due].sort((a, b) => a.at - b.at || a.seq - b.seq);
      const next = candidates[0];
      if (next) {
        if (this.#timers.delete(next.seq)) return next;
        this.#ready.splice(this.#ready.indexOf(next), 1);
        return next;
      }
      const nextTimer = Math.min(...[...this.#timers.values()].map((t) => t.wakeAt.getTime()));
      const wait = new AbortController();
      let budget: ReturnType<typeof setTimeout> | undefined;
      const outcome = await new Promise<"settled" | "budget" | "lost">((resolve) => {
        this.#onSettled = () => resolve("settled");
        budget = setTimeout(() => resolve("budget"), Math.max(0, this.#wallLeftMs()));
        if (Number.isFinite(nextTimer)) {
          this.#engine.clock.sleep(nextTimer - now, wait.signal).then(
            () => resolve("settled"),
            () => {},
          );
        }
        if (this.#abort.signal.aborted) resolve("lost");
        else this.#abort.signal.addEventListener("abort", () => resolve("lost"), { once: true });
        if (this.#yield?.aborted) resolve("budget");
        else this.#yield?.addEventListener("abort", () => resolve("budget"), { once: true });
      });
      clearTimeout(budget);
      wait.abort();
      this.#onSettled = undefined;
      if (outcome === "lost") throw new LeaseLost(String(this.#abort.signal.reason ?? "aborted"));
      if (outcome === "budget") return "budget";
    }
  }

  // ---- ending the invocation ---------------------------------------------------------------

  async #complete(result: Json): Promise<InvocationResult> {
    this.#collectLogs();
    await this.#store.completeRun(this.#lease, result, this.#logs.splice(0), this.#now);
    this.#engine.onEvent({ type: "completed", runId: this.#run.id });
    return { ...this.#result("completed"), result };
  }

  async #fail(error: RunError): Promise<InvocationResult> {
    this.#collectLogs();
    await this.#store.failRun(this.#lease, error, this.#logs.splice(0), this.#now);
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
    // outcomes that arrived but were not delivered yet: journal them, the next
    // invocation delivers them from there instead of running the calls again
    for (const ready of this.#ready.splice(0)) {
      await this.#settleInJournal(ready.seq, ready.outcome, ready.secret);
    }
    const snapshot = await takeSnapshot(vm);
    const parked = snapshot.header.parkedCalls;
    const children: string[] = [];
    let wakeAt: Date | null = null;
    let now = false;
    for (const seq of parked) {
      const timer = this.#timers.get(seq);
      const wait = this.#durable.get(seq);
      if (timer) {
        if (!wakeAt || timer.wakeAt < wakeAt) wakeAt = timer.wakeAt;
      } else if (!wait) now = true; // in flight here: it runs again in the next invocation
      else if (wait.kind === "now") now = true;
      else children.push(wait.childRunId);
    }
    if (reason === "budget" || now) wakeAt = this.#now;
    const waitingOn: WaitingOn = { calls: parked };
    if (children.length) waitingOn.children = children;
    if (wakeAt) waitingOn.wakeAt = wakeAt.toISOString();
    if (reason === "budget" && this.#yield?.aborted) {
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
      wakeAt,
      waitingOn,
      logs: this.#logs.splice(0),
    }, this.#now);
    this.#engine.onEvent({
      type: "suspended",
      runId: this.#run.id,
      bytes: snapshot.bytes.length,
      wakeAt: wakeAt?.toISOString() ?? null,
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

  // ---- budget, lease, logs -----------------------------------------------------------------

  #wallLeftMs(): number {
    return this.#engine.budget.wallMs - (performance.now() - this.#started);
  }

  #budgetSpent(): boolean {
    return this.#yield?.aborted === true || this.#wallLeftMs() <= 0 ||
      (this.#vm?.cpuMs ?? 0) >= this.#engine.budget.cpuMs;
  }

  #startHeartbeat(): void {
    const every = (this.#engine.leaseSeconds * 1000) / 3;
    this.#heartbeat = setInterval(async () => {
      try {
        await this.#store.heartbeat(this.#lease, this.#engine.leaseSeconds, this.#now);
      } catch (e) {
        if (e instanceof StoreError && (e.code === "STALE_LEASE" || e.code === "RUN_NOT_FOUND")) {
          this.#abort.abort(new LeaseLost(e.message));
        }
        // other errors: the database may be back by the next beat
      }
    }, every);
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
      this.#logs.push({ level: entry.level, message: entry.message, at: entry.at });
    }
  }

  async #flushLogs(): Promise<void> {
    if (this.#logs.length) await this.#store.appendLogs(this.#lease, this.#logs.splice(0));
  }

  #system(message: string): void {
    this.#logs.push({ level: "system", message, at: this.#now.getTime() });
  }
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
