/**
 * Runs invocations on a pool of threads the host can stop (EngineConfig.executor), for the
 * hosts that have threads: the self-hosted worker and `deno task serve`. The edge runtime
 * has no Web Workers; there the C-loop guards (sandbox/c_loop_guards.ts) stop the known
 * loops before they start and the platform's CPU limit ends the rest.
 *
 * Each thread (thread.ts) is a whole engine running one invocation at a time, over this
 * thread's database connection. A watchdog reads every busy thread's current VM slice: one
 * still running `graceMs` past its deadline is inside a built-in the interrupt handler
 * cannot reach (a BigInt's decimal string, a loop in C), so the thread is terminated, the
 * run fails SANDBOX_TIMEOUT under its lease (its last snapshot intact, a task's @retry
 * applies as to any failure), and a new thread takes its place. The other threads' runs
 * never notice.
 */
// the modules themselves, not mod.ts (whose supabase-js the worker never uses)
import type {
  Engine,
  InvocationResult,
  InvocationSignals,
  RunExecutor,
} from "../../../supabase/functions/_shared/quickjs/engine/run_loop.ts";
import {
  type ClaimedRun,
  type SqlDriver,
  StoreError,
} from "../../../supabase/functions/_shared/quickjs/store/store.ts";
import type { RunError } from "../../../supabase/functions/_shared/quickjs/sandbox/errors.ts";
import {
  shareBootImage,
  type SharedBootImage,
} from "../../../supabase/functions/_shared/quickjs/sandbox/boot_image.ts";
import { getBuild } from "../../../supabase/functions/_shared/quickjs/sandbox/wasm.ts";
import { type FromThread, type ThreadConfig, type ToThread, wireError } from "./protocol.ts";

export interface ThreadPoolOptions {
  /** Threads at most: the invocations that can run at once (a worker's concurrency). */
  size: number;
  config: Omit<ThreadConfig, "driverKind" | "driverDescription">;
  /** This thread's database: the threads' store operations run on it. */
  driver: SqlDriver;
  /** How long past its slice's deadline a thread may run before it is stopped (default 100). */
  graceMs?: number;
  /** How often the watchdog looks at the threads (default 10 ms). */
  watchMs?: number;
  /** Told of every preemption and thread failure. */
  onNote?: (message: string) => void;
}

export interface Preemption {
  runId: string;
  /** The slice the task had, and how long it held the thread when it was stopped (ms). */
  sliceMs: number;
  heldMs: number;
}

interface Busy {
  run: ClaimedRun;
  engine: Engine;
  started: number;
  restored: boolean;
  resolve: (result: InvocationResult) => void;
  reject: (error: unknown) => void;
}

class Thread {
  readonly worker: Worker;
  /** The current slice's start and deadline (epoch ms), written by the thread; 0: none. */
  readonly slice = new Float64Array(new SharedArrayBuffer(16));
  readonly ready: Promise<void>;
  busy: Busy | undefined;
  dead = false;

  constructor(
    pool: ThreadPool,
    config: ThreadConfig,
    shared: { compiled: WebAssembly.Module; boot: SharedBootImage },
  ) {
    this.worker = new Worker(new URL("./thread.ts", import.meta.url), { type: "module" });
    let ready!: () => void, failed!: (e: Error) => void;
    this.ready = new Promise<void>((resolve, reject) => {
      ready = resolve;
      failed = reject;
    });
    this.worker.onmessage = (event: MessageEvent<FromThread>) => {
      const message = event.data;
      switch (message.type) {
        case "ready":
          return ready();
        case "init-failed":
          this.dead = true;
          this.worker.terminate();
          return failed(new Error(`a worker thread failed to start: ${message.message}`));
        case "call":
          return pool.serve(this, message.id, message.op, message.args);
        case "event":
          if (message.event.type === "restored" && this.busy) this.busy.restored = true;
          this.busy?.engine.onEvent(message.event);
          return;
        case "done":
          return this.#end()?.resolve(message.result);
        case "threw":
          return this.#end()?.reject(new Error(message.message));
      }
    };
    this.worker.onerror = (event) => {
      // an error nothing in the thread caught: the thread is gone, its run's lease runs out
      event.preventDefault();
      this.dead = true;
      this.worker.terminate();
      const error = new Error(`a worker thread failed: ${event.message}`);
      failed(error);
      this.#end()?.reject(error);
      pool.note(error.message);
    };
    this.post({ type: "init", config, slot: this.slice.buffer as SharedArrayBuffer, ...shared });
  }

  post(message: ToThread): void {
    if (!this.dead) this.worker.postMessage(message);
  }

  #end(): Busy | undefined {
    const busy = this.busy;
    this.busy = undefined;
    return busy;
  }

  /** Stops the thread at once; its run, if any, is the caller's. */
  kill(): Busy | undefined {
    this.dead = true;
    this.worker.terminate();
    return this.#end();
  }
}

export class ThreadPool implements RunExecutor {
  readonly #size: number;
  readonly #config: ThreadConfig;
  readonly #driver: SqlDriver;
  readonly #graceMs: number;
  readonly #watchMs: number;
  readonly #onNote: (message: string) => void;
  readonly #threads = new Set<Thread>();
  readonly #starting = new Set<symbol>();
  readonly #idle: Thread[] = [];
  readonly #waiting: ((thread: Promise<Thread>) => void)[] = [];
  #watchdog: ReturnType<typeof setInterval> | undefined;
  #closed = false;
  /** Every preemption so far (tests and benchmarks read the overshoot from it). */
  readonly preemptions: Preemption[] = [];

  constructor(options: ThreadPoolOptions) {
    if (!Number.isInteger(options.size) || options.size < 1) {
      throw new RangeError("a thread pool needs at least one thread");
    }
    this.#size = options.size;
    this.#driver = options.driver;
    this.#config = {
      ...options.config,
      driverKind: options.driver.kind,
      driverDescription: options.driver.description,
    };
    this.#graceMs = options.graceMs ?? 100;
    this.#watchMs = options.watchMs ?? 10;
    this.#onNote = options.onNote ?? (() => {});
  }

  get threads(): number {
    return this.#threads.size;
  }

  /** Starts every thread (each builds its boot image) so the first runs do not wait. */
  async prepare(): Promise<void> {
    const started: Promise<Thread>[] = [];
    while (this.#threads.size + this.#starting.size < this.#size) started.push(this.#spawn());
    for (const thread of await Promise.all(started)) this.#give(thread);
  }

  close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#watchdog);
    this.#watchdog = undefined;
    for (const thread of this.#threads) thread.kill();
    this.#threads.clear();
    this.#idle.length = 0;
    return Promise.resolve();
  }

  async run(
    run: ClaimedRun,
    signals: InvocationSignals,
    engine: Engine,
  ): Promise<InvocationResult> {
    const thread = await this.#take();
    const onYield = () => thread.post({ type: "yield" });
    const onAbort = () => thread.post({ type: "abort" });
    try {
      const result = new Promise<InvocationResult>((resolve, reject) => {
        thread.busy = { run, engine, started: performance.now(), restored: false, resolve, reject };
      });
      thread.post({
        type: "run",
        run,
        claimedAtEpoch: performance.timeOrigin + (signals.claimedAt ?? performance.now()),
      });
      if (signals.yield?.aborted) onYield();
      if (signals.abort?.aborted) onAbort();
      signals.yield?.addEventListener("abort", onYield, { once: true });
      signals.abort?.addEventListener("abort", onAbort, { once: true });
      this.#watch();
      return await result;
    } finally {
      signals.yield?.removeEventListener("abort", onYield);
      signals.abort?.removeEventListener("abort", onAbort);
      this.#give(thread);
    }
  }

  /** Runs a thread's store operation on this thread's driver and answers it. */
  serve(thread: Thread, id: number, op: string, args: unknown): void {
    this.#driver.call(op as never, args as never).then(
      (value) => thread.post({ type: "reply", id, ok: true, value }),
      (e) => thread.post({ type: "reply", id, ok: false, error: wireError(e) }),
    );
  }

  note(message: string): void {
    this.#onNote(message);
  }

  async #spawn(): Promise<Thread> {
    const placeholder = this.#reserve();
    try {
      const [{ compiled }, boot] = await Promise.all([getBuild(), shareBootImage()]);
      const thread = new Thread(this, this.#config, { compiled, boot });
      this.#threads.add(thread);
      try {
        await thread.ready;
      } catch (e) {
        this.#threads.delete(thread);
        throw e;
      }
      return thread;
    } finally {
      this.#starting.delete(placeholder);
    }
  }

  /** Counts a thread being started against the size until it is in #threads. */
  #reserve(): symbol {
    const placeholder = Symbol("starting");
    this.#starting.add(placeholder);
    return placeholder;
  }

  #take(): Promise<Thread> {
    if (this.#closed) return Promise.reject(new Error("the thread pool is closed"));
    const idle = this.#idle.pop();
    if (idle) return Promise.resolve(idle);
    if (this.#threads.size + this.#starting.size < this.#size) return this.#spawn();
    return new Promise<Promise<Thread>>((resolve) => this.#waiting.push(resolve)).then((t) => t);
  }

  #give(thread: Thread): void {
    if (thread.dead) {
      this.#threads.delete(thread);
      // a run waiting for a thread gets a new one in the stopped one's place
      const next = this.#waiting.shift();
      if (next && !this.#closed) next(this.#spawn());
      return;
    }
    if (this.#closed) {
      thread.kill();
      this.#threads.delete(thread);
      return;
    }
    const next = this.#waiting.shift();
    if (next) next(Promise.resolve(thread));
    else this.#idle.push(thread);
  }

  /** Runs the watchdog while a thread is busy. */
  #watch(): void {
    if (this.#watchdog !== undefined) return;
    const watchdog = setInterval(() => {
      const now = performance.timeOrigin + performance.now();
      let busy = 0;
      for (const thread of this.#threads) {
        if (!thread.busy) continue;
        busy++;
        const [start = 0, deadline = 0] = thread.slice;
        if (deadline > 0 && now > deadline + this.#graceMs) {
          this.#preempt(thread, start, deadline, now);
        }
      }
      if (busy === 0) {
        clearInterval(watchdog);
        this.#watchdog = undefined;
      }
    }, this.#watchMs);
    Deno.unrefTimer(watchdog as unknown as number);
    this.#watchdog = watchdog;
  }

  #preempt(thread: Thread, start: number, deadline: number, now: number): void {
    const busy = thread.kill();
    if (!busy) return;
    const { run, engine } = busy;
    const sliceMs = Math.round(deadline - start);
    const heldMs = Math.round(now - start);
    this.preemptions.push({ runId: run.id, sliceMs, heldMs });
    this.note(
      `stopped the thread of run ${run.id} (${run.task}): ${heldMs} ms in one slice of ${sliceMs} ms`,
    );
    const error: RunError = {
      code: "SANDBOX_TIMEOUT",
      name: "SandboxTimeout",
      message: `the task ran for more than ${sliceMs} ms without awaiting, inside a built-in ` +
        `the interrupt cannot reach; its thread was stopped after ${heldMs} ms`,
    };
    const result = (status: InvocationResult["status"]): InvocationResult => ({
      runId: run.id,
      task: run.task,
      status,
      error,
      restored: busy.restored,
      cpuMs: heldMs,
      wallMs: performance.now() - busy.started,
    });
    engine.store.failRun({ runId: run.id, token: run.fencingToken }, error, [], engine.clock.now())
      .then((view) => {
        if (view.status === "failed") engine.onEvent({ type: "failed", runId: run.id });
        busy.resolve(result(view.status));
      }, (e) => {
        // taken over or cancelled meanwhile: its new holder decides
        if (e instanceof StoreError && e.code === "STALE_LEASE") busy.resolve(result("lost"));
        else busy.reject(e);
      });
  }
}
