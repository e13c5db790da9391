/**
 * The self-hosted worker's loop (scripts/worker.ts): keeps up to `concurrency` invocations
 * running. It claims when a NOTIFY on quickjs_runs arrives, when an invocation ends (a run
 * that suspended to continue at once is queued again), when the next wake time comes
 * (store.nextWakeAt), and at least every `pollMs`, the fallback when notifications are lost.
 * The next wake time is asked of the database at most once per `pollMs` and whenever the
 * one known has passed; in between, the wake times of this worker's own suspensions keep it.
 * stop() stops claiming, makes running invocations hand their runs over at their next idle
 * point, and resolves when they have.
 */
import type {
  ClaimedRun,
  Engine,
  InvocationResult,
  Store,
} from "../../supabase/functions/_shared/quickjs/mod.ts";

/** The channel quickjs.dispatch notifies when a run becomes queued. */
export const RUNS_CHANNEL = "quickjs_runs";

/**
 * How long to wait before claiming again when a run is due but the last claim did not get
 * it (another worker's claim held its row lock): short, but not a busy loop.
 */
const RETRY_DUE_MS = 250;
/** Timers fire a little early or late; aim just past a wake time so the run is due. */
const WAKE_SLACK_MS = 5;

export interface WorkerOptions {
  /** Invocations running at once (default 4). */
  concurrency?: number;
  /** Claim at least this often, in case a notification was lost (default 5000). */
  pollMs?: number;
  /** Run until nothing is due and nothing runs, then end (tests, cron-style use). */
  once?: boolean;
  /** LISTEN for NOTIFYs when the driver can (default true). */
  listen?: boolean;
  /** Called after every invocation. */
  onInvocation?: (result: InvocationResult) => void;
  /** An invocation that threw (the engine failed, not the task), or a claim that failed. */
  onError?: (error: unknown, where: { runId?: string; task?: string; what: string }) => void;
}

export interface WorkerStats {
  invocations: number;
  /** Invocations by the status they left their run in ("lost" included). */
  statuses: Record<string, number>;
  /** Failed claims and invocations that threw. */
  errors: number;
  /** Most invocations that ran at once. */
  maxConcurrent: number;
  /** Whether NOTIFYs woke the loop (false: it polled). */
  listening: boolean;
}

export class WorkerLoop {
  readonly #store: Store;
  readonly #engine: Engine;
  readonly #concurrency: number;
  readonly #pollMs: number;
  readonly #once: boolean;
  readonly #listen: boolean;
  readonly #onInvocation: (result: InvocationResult) => void;
  readonly #onError: NonNullable<WorkerOptions["onError"]>;
  /** Aborted by stop(): running invocations suspend at their next idle point. */
  readonly #yield = new AbortController();
  readonly #running = new Set<Promise<void>>();
  #stopping = false;
  /** Something may be due: claim when a slot is free. */
  #wanted = true;
  #wake: (() => void) | undefined;
  #unlisten: (() => Promise<void>) | undefined;
  /** The earliest wake time known (ms), undefined when unknown; and when it was asked for. */
  #nextWake: number | null | undefined;
  #nextWakeAskedAt = -Infinity;
  #loop: Promise<WorkerStats> | undefined;
  readonly #stats: WorkerStats = {
    invocations: 0,
    statuses: {},
    errors: 0,
    maxConcurrent: 0,
    listening: false,
  };

  constructor(store: Store, engine: Engine, options: WorkerOptions = {}) {
    this.#store = store;
    this.#engine = engine;
    this.#concurrency = options.concurrency ?? 4;
    this.#pollMs = options.pollMs ?? 5000;
    this.#once = options.once ?? false;
    this.#listen = options.listen ?? true;
    this.#onInvocation = options.onInvocation ?? (() => {});
    this.#onError = options.onError ?? (() => {});
    if (!Number.isInteger(this.#concurrency) || this.#concurrency < 1) {
      throw new RangeError(`concurrency must be a whole number of at least 1`);
    }
    if (!(this.#pollMs > 0)) throw new RangeError("pollMs must be positive");
  }

  /** Invocations running now. */
  get running(): number {
    return this.#running.size;
  }

  get stats(): Readonly<WorkerStats> {
    return this.#stats;
  }

  /**
   * Builds the sandbox's boot image (so the first run does not wait for it), listens (when
   * the driver can) and starts the loop; resolves once notifications arrive.
   */
  async start(): Promise<void> {
    if (this.#loop) throw new Error("the worker has already started");
    await this.#engine.prepare();
    const listen = this.#store.driver.listen;
    if (this.#listen && !this.#once && listen) {
      try {
        this.#unlisten = await listen.call(this.#store.driver, RUNS_CHANNEL, () => this.#poke());
        this.#stats.listening = true;
      } catch (e) {
        // polling still finds the runs, only later
        this.#stats.errors++;
        this.#onError(e, { what: `LISTEN ${RUNS_CHANNEL}` });
      }
    }
    this.#loop = this.#run();
  }

  /** Resolves when the loop has ended: after stop(), or with `once` when nothing is due. */
  get finished(): Promise<WorkerStats> {
    if (!this.#loop) return Promise.reject(new Error("the worker has not started"));
    return this.#loop;
  }

  /**
   * Stops claiming and hands the running runs over (they suspend at their next idle point,
   * queued to continue at once elsewhere); resolves when every invocation has ended.
   */
  async stop(): Promise<WorkerStats> {
    this.#stopping = true;
    this.#yield.abort(new Error("the worker is stopping"));
    this.#wake?.();
    if (!this.#loop) return this.#stats;
    return await this.#loop;
  }

  #poke(): void {
    this.#wanted = true;
    this.#wake?.();
  }

  async #run(): Promise<WorkerStats> {
    try {
      while (!this.#stopping) {
        const free = this.#concurrency - this.#running.size;
        if (free > 0 && this.#wanted) {
          this.#wanted = false;
          let claimed: ClaimedRun[];
          const claimedAt = performance.now();
          try {
            claimed = await this.#store.claimRuns({
              worker: this.#engine.workerId,
              limit: free,
              leaseSeconds: this.#engine.leaseSeconds,
              now: this.#engine.clock.now(),
            });
          } catch (e) {
            this.#stats.errors++;
            this.#onError(e, { what: "claim" });
            if (this.#once) break;
            await this.#idle(this.#pollMs);
            continue;
          }
          // launched even when stop() came meanwhile: the yield signal hands them over
          for (const run of claimed) this.#launch(run, claimedAt);
          // a full batch: more may be due
          if (claimed.length === free) this.#wanted = true;
          continue;
        }
        if (this.#once && this.#running.size === 0 && !this.#wanted) break;
        await this.#idle();
      }
    } finally {
      while (this.#running.size) await Promise.all([...this.#running]);
      const unlisten = this.#unlisten;
      this.#unlisten = undefined;
      await unlisten?.().catch((e) => this.#onError(e, { what: `UNLISTEN ${RUNS_CHANNEL}` }));
    }
    return this.#stats;
  }

  #launch(run: ClaimedRun, claimedAt: number): void {
    const work = this.#engine.runClaimed(run, { yield: this.#yield.signal, claimedAt }).then(
      (result) => {
        if (result.wakeAt && result.status === "suspended") {
          const at = Date.parse(result.wakeAt);
          if (this.#nextWake === null || (this.#nextWake !== undefined && at < this.#nextWake)) {
            this.#nextWake = at;
          }
        }
        this.#stats.invocations++;
        this.#stats.statuses[result.status] = (this.#stats.statuses[result.status] ?? 0) + 1;
        this.#onInvocation(result);
      },
      (e) => {
        // the engine failed (database gone, a bug): the lease runs out and another
        // worker continues the run from its last snapshot
        this.#stats.errors++;
        this.#onError(e, { runId: run.id, task: run.task, what: "invocation" });
      },
    ).finally(() => {
      this.#running.delete(work);
      this.#poke(); // a slot is free, and the run may be queued to continue at once
    });
    this.#running.add(work);
    this.#stats.maxConcurrent = Math.max(this.#stats.maxConcurrent, this.#running.size);
  }

  #stale(now: number): boolean {
    return now - this.#nextWakeAskedAt >= this.#pollMs;
  }

  /**
   * Waits for a NOTIFY, an invocation to end, stop(), or a timeout: the next wake time
   * when a slot is free and it comes before the poll interval, else the poll interval.
   */
  async #idle(fixedMs?: number): Promise<void> {
    let ms = fixedMs ?? this.#pollMs;
    const free = this.#running.size < this.#concurrency;
    if (fixedMs === undefined && free && !this.#once) {
      try {
        const now = this.#engine.clock.now().getTime();
        const known = this.#nextWake;
        // one query per poll interval, or when the wake time known has come
        if (known === undefined || (known !== null && known <= now) || this.#stale(now)) {
          this.#nextWakeAskedAt = now;
          this.#nextWake = (await this.#store.nextWakeAt(new Date(now)))?.getTime() ?? null;
        }
        const next = this.#nextWake;
        if (next !== null && next !== undefined) {
          const until = next - now;
          ms = Math.min(ms, until > 0 ? until + WAKE_SLACK_MS : RETRY_DUE_MS);
        }
      } catch (e) {
        this.#nextWake = undefined;
        this.#stats.errors++;
        this.#onError(e, { what: "next wake time" });
      }
    }
    // a poke that came while we looked up the wake time must not be lost
    if (this.#stopping || (this.#wanted && free && fixedMs === undefined)) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await new Promise<void>((resolve) => {
      this.#wake = resolve;
      timer = setTimeout(resolve, ms);
    });
    clearTimeout(timer);
    this.#wake = undefined;
    this.#wanted = true;
  }
}
