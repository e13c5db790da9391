/**
 * The sandbox's limits, each a named value with a named check, so tests can aim at one
 * limit at a time and every breach ends the run with a stable code.
 */
import type { ErrorCode } from "../errors.ts";

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
  /**
   * Size of one host call's arguments as JSON, in UTF-16 units (bytes, for ASCII); more and
   * the call rejects ARGS_TOO_LARGE.
   */
  argsBytes: number;
  /**
   * Bytes of arguments and results that may cross the bridge in one invocation. Past half
   * of it the run suspends and continues in a fresh invocation; a call that would pass all
   * of it (a burst of calls in one slice) rejects HOST_BYTES_EXCEEDED.
   */
  hostBytes: number;
}

const MiB = 1024 * 1024;

/**
 * The most stack a task may ask for. Every QuickJS frame is also a wasm frame on V8's own
 * (native) stack, which overflows before QuickJS's check when the limit is much above
 * this: measured, plain recursion broke V8 at 512 KiB and recursion through Array#map at
 * 384 KiB; 256 KiB held for every shape tried. A V8 overflow still ends the run with
 * SANDBOX_STACK (vm.ts), but the VM is lost with it.
 */
export const MAX_STACK_BYTES = 320 * 1024;

export const DEFAULT_LIMITS: Readonly<SandboxLimits> = Object.freeze({
  // The VM's wasm memory is fixed at its static data and stack (~5 MiB) plus this plus
  // 4 MiB of headroom: 41 MiB, of which V8 counts all against the worker's 256 MB, so
  // three fit the isolate's default budget at once (engine/admission.ts).
  memoryBytes: 32 * MiB,
  // Below the depth at which V8's native stack overflows first (see MAX_STACK_BYTES);
  // a few thousand frames of ordinary recursion.
  stackBytes: 256 * 1024,
  // Half of Supabase's 2 s CPU limit per request, so a slice that starts just before the
  // invocation's CPU budget runs out still ends inside the platform's limit.
  sliceMs: 1000,
  logBytes: 256 * 1024,
  resultBytes: 1 * MiB,
  pendingCalls: 1000,
  // as large as a result may be: a call's arguments are stored in the journal like a result
  argsBytes: 1 * MiB,
  // the host keeps each call's arguments and result (parsed, and as JSON for the journal)
  // until the invocation ends: a few copies of 16 MiB, a fraction of the worker's 256 MB
  // (not measured for calls that pass; tests/engine/args_memory_test.ts measures the
  // 16 MiB-argument attack, refused by argsBytes: 83 MB growth of the test process's RSS)
  hostBytes: 16 * MiB,
});

/** Bounds a task definition or caller may ask for; outside them is a 422. */
export const LIMIT_BOUNDS: Readonly<Record<keyof SandboxLimits, readonly [number, number]>> = Object
  .freeze({
    // 96 MiB makes a 113 MiB VM: one always fits the isolate's default 128 MiB budget
    memoryBytes: [1 * MiB, 96 * MiB],
    stackBytes: [64 * 1024, MAX_STACK_BYTES],
    sliceMs: [10, 600_000],
    logBytes: [0, 64 * MiB],
    resultBytes: [16, 64 * MiB],
    pendingCalls: [1, 100_000],
    argsBytes: [16, 64 * MiB],
    hostBytes: [1 * MiB, 256 * MiB],
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
 * Told when a slice starts (its deadline, on performance.now()) and ends (Infinity): a
 * thread running VMs publishes it where the thread that can stop it reads it (the worker's
 * watchdog, scripts/lib/threads/), for the built-ins the interrupt handler cannot reach.
 */
export type SliceObserver = (deadline: number) => void;

let sliceObserver: SliceObserver | undefined;

/** Sets (or, with undefined, clears) this thread's slice observer. */
export function observeSlices(observer: SliceObserver | undefined): void {
  sliceObserver = observer;
}

/**
 * What the interrupt handler checks, every few thousand QuickJS instructions: the CPU
 * deadline of the current slice, and the heap's high-water mark. (QuickJS's own memory
 * limit counts allocations, not bytes, in this build: its malloc_usable_size is 0 under
 * emscripten.) An interrupt cannot be caught by task code.
 */
export class InterruptWatch {
  #deadline = Infinity;
  #fired: "time" | "memory" | undefined;
  #heap: { words: Uint32Array; index: number; limit: number } | undefined;

  /** Starts the CPU deadline of a slice. */
  arm(ms: number, now = performance.now()): void {
    this.#deadline = now + ms;
    sliceObserver?.(this.#deadline);
  }

  disarm(): void {
    this.#deadline = Infinity;
    sliceObserver?.(Infinity);
  }

  /**
   * Watches the allocator's break (a word in static memory) against `limit`. The memory
   * never grows (wasm.ts), so one view of it stays valid for the VM's life.
   */
  watchHeap(memory: WebAssembly.Memory, breakAddress: number, limit: number): void {
    this.#heap = { words: new Uint32Array(memory.buffer), index: breakAddress >> 2, limit };
  }

  /** True when the heap has grown past its limit. */
  heapOverLimit(): boolean {
    const heap = this.#heap;
    return heap !== undefined && heap.words[heap.index]! > heap.limit;
  }

  /** Which limit fired during the current or an earlier slice. */
  get fired(): "time" | "memory" | undefined {
    return this.#fired;
  }

  shouldInterrupt = (): boolean => {
    if (this.heapOverLimit()) {
      this.#fired = "memory";
      return true;
    }
    if (performance.now() <= this.#deadline) return false;
    this.#fired = "time";
    return true;
  };
}

/** Maps what QuickJS throws when a limit is hit to the run's error code. */
export function limitErrorCode(name: string, message: string): ErrorCode | undefined {
  if (name !== "InternalError") return undefined;
  if (message === "interrupted") return "SANDBOX_TIMEOUT";
  if (message === "out of memory") return "SANDBOX_MEMORY";
  if (message === "stack overflow") return "SANDBOX_STACK";
  return undefined;
}
