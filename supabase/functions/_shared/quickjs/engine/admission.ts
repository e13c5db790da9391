/**
 * Memory admission: how many VMs may be alive in one isolate. Every VM owns a fixed-size
 * WebAssembly.Memory, which the edge runtime counts at its full size (V8 external memory)
 * against the worker's 256 MB, so VMs are admitted against a budget of wasm bytes, in
 * arrival order; work beyond it waits (or, before a claim, is left queued for others).
 */
import { resolveLimits, type SandboxLimits } from "../sandbox/limits.ts";
import { wasmPagesFor } from "../sandbox/vm.ts";
import { getBuild } from "../sandbox/wasm.ts";
import {
  evictOthers,
  isPooled,
  promiseMemory,
  unpromisedBytes,
  withdrawPromise,
} from "../sandbox/memory_pool.ts";

const MiB = 1024 * 1024;
const WASM_PAGE = 65536;

/**
 * Wasm bytes all VMs of one isolate may reserve at once (QUICKJS_ISOLATE_MEMORY_BYTES).
 * Supabase kills a worker at 256 MiB of heap + external memory. Measured under Deno 2.1.4:
 * the function idles at ~16 MiB of heap and ~24 MiB of external memory (the compiled wasm
 * and the 5.3 MiB boot image), and a VM's memory stays counted after the VM is disposed
 * until V8 collects it, which takes a garbage collection V8 starts on its own schedule
 * (tests/platform measures the peak). 128 MiB leaves ~88 MiB for that lag and for
 * heap growth: three VMs of the default size (41 MiB) at once.
 */
export const DEFAULT_ISOLATE_MEMORY_BYTES = 128 * MiB;

/** A reservation; release it once the VM it paid for is disposed. */
export interface MemoryTicket {
  readonly bytes: number;
  /**
   * Gives the bytes back (idempotent). Pass the VM's WebAssembly.Memory: back in the pool
   * it stays counted there; dropped (a trapped VM) it is counted until V8 collects it.
   */
  release(memory?: WebAssembly.Memory): void;
}

interface Waiter {
  bytes: number;
  grant: (ticket: MemoryTicket) => void;
}

/**
 * How long dropped memory is counted at most when nothing collects it: V8 collects only
 * at a GC it starts itself, and an idle isolate may start none, which would leave waiting
 * work waiting for ever. Drops are rare (a VM that trapped), so this bound is seldom used.
 */
const GARBAGE_COUNTED_MS = 5_000;

/**
 * Admits VMs against a budget of wasm bytes: those of live VMs, of idle memories in the
 * pool (sandbox/memory_pool.ts) and of dropped memories V8 has not freed yet.
 */
export class MemoryAdmission {
  readonly budgetBytes: number;
  #reserved = 0;
  #live = 0;
  #garbage = 0;
  #queue: Waiter[] = [];
  #peak = 0;
  readonly #collected = new FinalizationRegistry<() => void>((forget) => forget());

  constructor(budgetBytes: number = DEFAULT_ISOLATE_MEMORY_BYTES) {
    if (!Number.isFinite(budgetBytes) || budgetBytes <= 0) {
      throw new RangeError(
        `the isolate memory budget must be a positive number, got ${budgetBytes}`,
      );
    }
    this.budgetBytes = budgetBytes;
  }

  /** Bytes counted now: live VMs, idle pooled memories, uncollected ones. */
  get countedBytes(): number {
    return this.#reserved + unpromisedBytes() + this.#garbage;
  }

  /** The most bytes ever counted at once (at an admission). */
  get peakBytes(): number {
    return this.#peak;
  }

  /** Reservations waiting for memory. */
  get waiting(): number {
    return this.#queue.length;
  }

  /** VMs admitted and not released. */
  get live(): number {
    return this.#live;
  }

  /** How many VMs of `bytes` (at most `wanted`) would be admitted now. */
  available(bytes: number, wanted: number): number {
    if (this.#queue.length > 0 || wanted <= 0) return 0;
    if (this.#live === 0 && bytes > this.budgetBytes) return 1; // alone rather than never
    const free = this.budgetBytes - this.#reserved - this.#garbage;
    // idle memories of this size are reused, so they are free room for it
    return Math.max(0, Math.min(wanted, Math.floor(free / bytes)));
  }

  /** Reserves `bytes`, waiting in arrival order until they fit. */
  acquire(bytes: number): Promise<MemoryTicket> {
    if (this.#queue.length === 0) {
      const ticket = this.#tryTake(bytes);
      if (ticket) return Promise.resolve(ticket);
    }
    return new Promise((grant) => this.#queue.push({ bytes, grant }));
  }

  /**
   * Waits until at least one VM of `bytes` would be admitted, then says how many (up to
   * `wanted`) would be now. It reserves nothing: a claim takes no more runs than this
   * isolate can run at once, and acquire() is what bounds the VMs.
   */
  async capacity(bytes: number, wanted: number): Promise<number> {
    const now = this.available(bytes, wanted);
    if (now > 0 || wanted <= 0) return now;
    (await this.acquire(bytes)).release();
    return Math.max(1, this.available(bytes, wanted));
  }

  #tryTake(bytes: number): MemoryTicket | undefined {
    if (promiseMemory(bytes)) return this.#ticket(bytes, true); // an idle one, reused
    const fits = () => this.countedBytes + bytes <= this.budgetBytes;
    if (!fits()) {
      // idle memories of other sizes make room, but count until V8 frees them
      for (const memory of evictOthers(bytes)) this.#countUntilCollected(memory);
    }
    if (fits() || (this.#live === 0 && this.#garbage === 0)) return this.#ticket(bytes, false);
    return undefined;
  }

  #ticket(bytes: number, promised: boolean): MemoryTicket {
    this.#reserved += bytes;
    this.#live++;
    this.#peak = Math.max(this.#peak, this.countedBytes);
    let released = false;
    return {
      bytes,
      release: (memory?: WebAssembly.Memory) => {
        if (released) return;
        released = true;
        if (promised && !memory) withdrawPromise(bytes); // no VM was made
        this.#reserved -= bytes;
        this.#live--;
        if (memory && !isPooled(memory)) this.#countUntilCollected(memory);
        this.#drain();
      },
    };
  }

  #countUntilCollected(memory: WebAssembly.Memory): void {
    const bytes = memory.buffer.byteLength;
    this.#garbage += bytes;
    let counted = true;
    const forget = () => {
      if (!counted) return;
      counted = false;
      this.#garbage -= bytes;
      clearTimeout(timer);
      this.#drain();
    };
    const timer = setTimeout(forget, GARBAGE_COUNTED_MS);
    Deno.unrefTimer(timer);
    this.#collected.register(memory, forget);
  }

  #drain(): void {
    while (this.#queue.length > 0) {
      const ticket = this.#tryTake(this.#queue[0]!.bytes);
      if (!ticket) return;
      this.#queue.shift()!.grant(ticket);
    }
  }
}

/** The isolate's budget from QUICKJS_ISOLATE_MEMORY_BYTES, or the default. */
export function isolateBudgetFromEnv(env: { get(name: string): string | undefined }): number {
  const value = env.get("QUICKJS_ISOLATE_MEMORY_BYTES");
  if (!value) return DEFAULT_ISOLATE_MEMORY_BYTES;
  const bytes = Number(value);
  if (!Number.isInteger(bytes) || bytes <= 0) {
    throw new RangeError(`QUICKJS_ISOLATE_MEMORY_BYTES must be a positive integer, got ${value}`);
  }
  return bytes;
}

let shared: MemoryAdmission | undefined;

/**
 * The one admission of this isolate (engines share it: the budget is the isolate's).
 * The first call fixes the budget; QUICKJS_ISOLATE_MEMORY_BYTES sets it.
 */
export function isolateAdmission(): MemoryAdmission {
  return shared ??= new MemoryAdmission(
    isolateBudgetFromEnv({ get: (name) => Deno.env.get(name) }),
  );
}

/** The wasm memory a fresh VM with these limits reserves. */
export async function freshVmBytes(limits: SandboxLimits): Promise<number> {
  const build = await getBuild();
  // instantiate() never makes a memory below the module's declared minimum
  return Math.max(build.facts.minPages, wasmPagesFor(limits, build.facts.heapBase)) * WASM_PAGE;
}

/**
 * The wasm memory a claimed run's VM will reserve. A VM's memory is fixed by its limits and
 * a restore runs under the task version's limits (a snapshot under others is refused), so
 * a restored VM reserves what a fresh one does.
 */
export async function vmBytesFor(run: { limits: Record<string, number> }): Promise<number> {
  let limits: SandboxLimits;
  try {
    limits = resolveLimits(run.limits);
  } catch {
    limits = resolveLimits({}); // the run fails with TASK_INVALID before it makes a VM
  }
  return await freshVmBytes(limits);
}
