/**
 * The sandbox's limits, each a named value with a named check, so tests can aim at one
 * limit at a time and every breach ends the run with a stable code.
 */
import type { SandboxErrorCode } from "./errors.ts";

export interface SandboxLimits {
  /** QuickJS allocator limit. A task's heap beyond it gets "out of memory". */
  memoryBytes: number;
  /** QuickJS stack limit; must stay well under the wasm C stack (5 MiB in this build). */
  stackBytes: number;
  /** CPU deadline for one synchronous stretch of task code (no await in between). */
  sliceMs: number;
  /** Total bytes the task may log over its whole run. */
  logBytes: number;
  /** Size of the JSON result. */
  resultBytes: number;
  /** Host calls the task may have in flight at once. */
  pendingCalls: number;
}

const MiB = 1024 * 1024;

/**
 * The most stack a task may ask for. The wasm build's C stack must be larger (it is
 * 5 MiB in quickjs-emscripten 0.32), or deep recursion would run into static data:
 * wasm.ts refuses a build whose stack region is not. snapshot.ts relies on the same
 * bound: the top MAX_STACK_BYTES below the heap base are C stack, dead when the VM idles.
 */
export const MAX_STACK_BYTES = 4 * MiB;

export const DEFAULT_LIMITS: Readonly<SandboxLimits> = Object.freeze({
  // 64 MiB keeps a VM's wasm memory under ~80 MiB; an edge function has 150 MiB or more.
  memoryBytes: 64 * MiB,
  // QuickJS's own default; ~10,000 frames of ordinary recursion.
  stackBytes: 1 * MiB,
  // Half of Supabase's 2 s CPU limit per request, so a slice that starts just before the
  // invocation's CPU budget runs out still ends inside the platform's limit.
  sliceMs: 1000,
  logBytes: 256 * 1024,
  resultBytes: 1 * MiB,
  pendingCalls: 1000,
});

/** Bounds a task definition or caller may ask for; outside them is a 422. */
export const LIMIT_BOUNDS: Readonly<Record<keyof SandboxLimits, readonly [number, number]>> = Object
  .freeze({
    memoryBytes: [1 * MiB, 1024 * MiB],
    stackBytes: [64 * 1024, MAX_STACK_BYTES],
    sliceMs: [10, 600_000],
    logBytes: [0, 64 * MiB],
    resultBytes: [16, 64 * MiB],
    pendingCalls: [1, 100_000],
  });

/** Fills in defaults and checks bounds; throws RangeError naming the limit. */
export function resolveLimits(partial: Partial<SandboxLimits> = {}): SandboxLimits {
  const limits = { ...DEFAULT_LIMITS };
  for (const key of Object.keys(LIMIT_BOUNDS) as (keyof SandboxLimits)[]) {
    const value = partial[key];
    if (value === undefined) continue;
    const [min, max] = LIMIT_BOUNDS[key];
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new RangeError(`limit ${key} must be an integer from ${min} to ${max}, got ${value}`);
    }
    limits[key] = value;
  }
  return limits;
}

/**
 * The CPU deadline behind the interrupt handler. Armed before every entry into the VM;
 * QuickJS polls `shouldInterrupt` every few thousand instructions, and an interrupt
 * cannot be caught by task code.
 */
export class SliceDeadline {
  #deadline = Infinity;
  #fired = false;

  arm(ms: number, now = performance.now()): void {
    this.#deadline = now + ms;
  }

  disarm(): void {
    this.#deadline = Infinity;
  }

  /** True once the deadline fired during the current or any earlier slice. */
  get fired(): boolean {
    return this.#fired;
  }

  shouldInterrupt = (): boolean => {
    if (performance.now() <= this.#deadline) return false;
    this.#fired = true;
    return true;
  };
}

/** Maps what QuickJS throws when a limit is hit to the run's error code. */
export function limitErrorCode(name: string, message: string): SandboxErrorCode | undefined {
  if (name !== "InternalError") return undefined;
  if (message === "interrupted") return "SANDBOX_TIMEOUT";
  if (message === "out of memory") return "SANDBOX_MEMORY";
  if (message === "stack overflow") return "SANDBOX_STACK";
  return undefined;
}

/** UTF-8 length of a string, for the byte limits. */
export function utf8Bytes(s: string): number {
  return new TextEncoder().encode(s).byteLength;
}
