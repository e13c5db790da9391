/**
 * Reuses the WebAssembly.Memory of cleanly disposed VMs. V8 frees a dropped Memory only at
 * a garbage collection it starts on its own schedule, and until then the edge runtime
 * counts it at its full size against the worker's 256 MB: measured under Deno 2.1.4, one
 * trivial run after another passed 256 MB of dead VMs within ~20 runs. A Memory is zeroed
 * when it is given back, so a VM over it starts from exactly the bytes of a new one
 * (snapshots and restores rely on that). engine/admission.ts counts what is pooled, and may
 * promise an idle memory to a VM about to be made.
 */

const WASM_PAGE = 65536;

interface Pool {
  idle: WebAssembly.Memory[];
  /** Idle memories promised to VMs about to be made (never more than idle.length). */
  promised: number;
}

/** By size in bytes. */
const pools = new Map<number, Pool>();
const pooled = new WeakSet<WebAssembly.Memory>();
/**
 * The module instance a pooled memory was given back with (wasm.ts reuses it instead of
 * instantiating again). Opaque here; the accounting stays by memory: an instance adds
 * only its JS objects and a few KiB of tables to the memory it owns.
 */
const instances = new WeakMap<WebAssembly.Memory, unknown>();

/** The instance kept with a memory just taken from the pool (once), or undefined. */
export function takeInstance<T>(memory: WebAssembly.Memory): T | undefined {
  const instance = instances.get(memory) as T | undefined;
  instances.delete(memory);
  return instance;
}

function pool(bytes: number): Pool {
  let p = pools.get(bytes);
  if (!p) pools.set(bytes, p = { idle: [], promised: 0 });
  return p;
}

/**
 * An idle memory of exactly `pages`, zeroed, or undefined (wasm.ts instantiate): the latest
 * one whose kept instance `wanted` accepts (one of the build the caller instantiates), else
 * the latest of all.
 */
export function takeMemory(
  pages: number,
  wanted?: (instance: unknown) => boolean,
): WebAssembly.Memory | undefined {
  const p = pools.get(pages * WASM_PAGE);
  if (!p || p.idle.length === 0) return undefined;
  let index = p.idle.length - 1;
  if (wanted) {
    for (let i = p.idle.length - 1; i >= 0; i--) {
      const instance = instances.get(p.idle[i]!);
      if (instance !== undefined && wanted(instance)) {
        index = i;
        break;
      }
    }
  }
  const memory = p.idle.splice(index, 1)[0]!;
  if (p.promised > 0) p.promised--; // taken by the VM it was promised to, as a rule
  p.promised = Math.min(p.promised, p.idle.length);
  pooled.delete(memory);
  return memory; // zeroed when it was given back
}

/**
 * Keeps the memory of a VM whose instance is done with it (disposed, not trapped), with the
 * byte ranges `written` zeroed now (default: all of it). A default VM's memory is 41 MiB,
 * of which a small task leaves ~1.3 MiB that matter (sandbox/vm.ts passes its live pages
 * below the heap break: nothing above the break was ever written, the allocator never
 * trims, which snapshots rely on too; the dead top of the C stack is never read before it
 * is written). Zeroing all 41 MiB before every run cost ~3 to 7 ms on the path from claim
 * to start and made every pooled memory resident in full (a page is committed when first
 * written): ~4 times graphile-worker's peak RSS. Zeroing here, after the run has ended,
 * keeps it off that path too.
 */
export function giveBackMemory(
  memory: WebAssembly.Memory,
  written: [start: number, end: number][] = [[0, memory.buffer.byteLength]],
  instance?: unknown,
): void {
  if (pooled.has(memory)) return;
  const bytes = new Uint8Array(memory.buffer);
  for (const [start, end] of written) bytes.fill(0, start, end);
  if (instance !== undefined) instances.set(memory, instance);
  else instances.delete(memory);
  pooled.add(memory);
  pool(memory.buffer.byteLength).idle.push(memory);
}

/** True when the memory is idle in the pool: still alive, and counted there. */
export function isPooled(memory: WebAssembly.Memory): boolean {
  return pooled.has(memory);
}

/** Promises an idle memory of `bytes` to a VM about to be made; false when none is free. */
export function promiseMemory(bytes: number): boolean {
  const p = pools.get(bytes);
  if (!p || p.promised >= p.idle.length) return false;
  p.promised++;
  return true;
}

/** Withdraws a promise that no VM took up. */
export function withdrawPromise(bytes: number): void {
  const p = pools.get(bytes);
  if (p && p.promised > 0) p.promised--;
}

/** Bytes of idle memories not promised to anyone. */
export function unpromisedBytes(): number {
  let total = 0;
  for (const [bytes, p] of pools) total += (p.idle.length - p.promised) * bytes;
  return total;
}

/** Drops the unpromised idle memories of sizes other than `keepBytes`; returns them. */
export function evictOthers(keepBytes: number): WebAssembly.Memory[] {
  const dropped: WebAssembly.Memory[] = [];
  for (const [bytes, p] of pools) {
    if (bytes === keepBytes) continue;
    while (p.idle.length > p.promised) {
      const memory = p.idle.shift()!;
      pooled.delete(memory);
      instances.delete(memory);
      dropped.push(memory);
    }
  }
  return dropped;
}
