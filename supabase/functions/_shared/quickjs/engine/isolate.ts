/**
 * The worker's life as Supabase's edge runtime counts it: CPU summed over the worker's life
 * against a limit, a wall clock from the worker's start, and a `beforeunload` event before
 * the kill (reasons cpu, memory, wall_clock, early_drop, termination). An invocation's
 * budget is the smaller of its own and what the worker has left, so a run suspends at an
 * idle point before the platform ends the worker under it.
 */
import process from "node:process";

export interface IsolateLimits {
  /** Wall clock of the worker from its start: 150 s on the free plan, 400 s on paid ones. */
  wallMs: number;
  /** CPU the worker may spend over its life before the runtime's soft limit stops it. */
  cpuMs: number;
  /**
   * Kept back from the wall clock for saving the VM and answering: a call in flight may
   * need to end, then a snapshot of a large heap is written (10 s, as the 140 s budget of
   * a 150 s worker always kept).
   */
  wallMarginMs: number;
  /** Kept back from the CPU: a snapshot of a 50 MB heap takes ~100 ms of CPU. */
  cpuMarginMs: number;
}

/**
 * Unbounded: a self-hosted worker or `deno task serve` has no platform limits; the
 * invocation budget alone applies.
 */
export const UNLIMITED: Readonly<IsolateLimits> = Object.freeze({
  wallMs: Infinity,
  cpuMs: Infinity,
  wallMarginMs: 0,
  cpuMarginMs: 0,
});

/**
 * Supabase's free plan: 150 s wall; CPU over the worker's life, where the documented 2 s
 * per request is the figure to stay inside.
 */
export const SUPABASE_FREE: Readonly<IsolateLimits> = Object.freeze({
  wallMs: 150_000,
  cpuMs: 2_000,
  wallMarginMs: 10_000,
  cpuMarginMs: 200,
});

/**
 * CPU this process has spent, in ms (every thread: an over- rather than an undercount), or
 * NaN where the runtime cannot tell: Deno 2.1 (Supabase's edge runtime today) has no
 * process.cpuUsage(), and there the worker's CPU limit is left to the per-invocation budget.
 */
export function processCpuMs(): number {
  if (typeof process.cpuUsage !== "function") return NaN;
  try {
    const { user, system } = process.cpuUsage();
    return (user + system) / 1000;
  } catch {
    return NaN;
  }
}

export class IsolateLife {
  readonly limits: IsolateLimits;
  readonly #startedAt: number;
  readonly #cpuAtStart: number;
  readonly #unloading = new AbortController();

  /**
   * `startedAt` / `cpuAtStartMs`: when the worker started and the process CPU then (default:
   * the process's start, so module loading and the boot image count against the worker).
   */
  constructor(
    limits: Partial<IsolateLimits> = {},
    options: { startedAt?: number; cpuAtStartMs?: number } = {},
  ) {
    this.limits = { ...UNLIMITED, ...limits };
    this.#startedAt = options.startedAt ?? 0;
    this.#cpuAtStart = options.cpuAtStartMs ?? 0;
  }

  /** Aborted when the runtime announces the end (beforeunload): suspend at the next idle point. */
  get unloading(): AbortSignal {
    return this.#unloading.signal;
  }

  /** Listens for the runtime's `beforeunload`. Returns a function that stops listening. */
  listen(target: EventTarget = globalThis): () => void {
    const onUnload = (event: Event) => {
      const detail = (event as CustomEvent<{ reason?: string }>).detail;
      this.#unloading.abort(
        new Error(`the runtime is ending the worker (${detail?.reason ?? "beforeunload"})`),
      );
    };
    target.addEventListener("beforeunload", onUnload);
    return () => target.removeEventListener("beforeunload", onUnload);
  }

  /**
   * CPU the worker has spent in its life, in ms. Where the process runs other threads too
   * (a runtime hosting several workers), their CPU would count as well: one JS thread
   * cannot spend more CPU than wall time, so the figure is capped at the worker's age.
   */
  cpuMs(): number {
    const spent = processCpuMs() - this.#cpuAtStart;
    // unknown: count none (comparisons with NaN would never end a budget, but be explicit)
    if (Number.isNaN(spent)) return 0;
    return Math.min(spent, performance.now() - this.#startedAt);
  }

  /** Wall time left before the runtime ends the worker, less the margin. */
  wallLeftMs(): number {
    return this.limits.wallMs - (performance.now() - this.#startedAt) - this.limits.wallMarginMs;
  }

  /** CPU left before the runtime's limit, less the margin. */
  cpuLeftMs(): number {
    // no limit: no need to ask (process.cpuUsage() was ~1 ms of every ten-step workflow)
    if (this.limits.cpuMs === Infinity) return Infinity;
    return this.limits.cpuMs - this.cpuMs() - this.limits.cpuMarginMs;
  }
}

/** A worker without platform limits (self-hosted worker, CLIs, tests). */
export const unlimitedIsolate = new IsolateLife();

/** The platform's limits from the environment, defaulting to Supabase's free plan. */
export function isolateLimitsFromEnv(
  env: { get(name: string): string | undefined },
): IsolateLimits {
  const number = (name: string, fallback: number) => {
    const text = env.get(name);
    if (text === undefined || text === "") return fallback;
    if (text === "off") return Infinity;
    const n = Number(text);
    if (!(n > 0)) {
      throw new RangeError(`${name} must be a positive number of ms or "off", got ${text}`);
    }
    return n;
  };
  return {
    wallMs: number("QUICKJS_WORKER_WALL_MS", SUPABASE_FREE.wallMs),
    cpuMs: number("QUICKJS_WORKER_CPU_MS", SUPABASE_FREE.cpuMs),
    wallMarginMs: SUPABASE_FREE.wallMarginMs,
    cpuMarginMs: SUPABASE_FREE.cpuMarginMs,
  };
}
