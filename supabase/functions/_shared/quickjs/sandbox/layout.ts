/**
 * Where an idle VM's state lives in wasm memory, page by page: what the boot image and
 * the snapshot compare and copy, and what they may skip.
 *
 *   [0, stack)           static data and bss (libc and allocator state): live
 *   [stack, heapBase)    the C stack, growing down from heapBase; dead when the VM idles
 *   [heapBase, break)    the malloc heap: live
 */

/**
 * What the snapshot code must know about a build's memory layout, read from its wasm bytes
 * (wasm.ts: analyseWasm). It lives here, not in wasm.ts, so that the layout depends on
 * nothing and wasm.ts depends on it, never the other way round.
 */
export interface BuildFacts {
  /** Name of the export whose body is `global.get 0` (emscripten's stackSave). */
  stackSaveExport: string;
  /** Initial value of the stack pointer global: top of the C stack and base of the heap. */
  heapBase: number;
  /** Address of emscripten's `sbrk_val` (the heap break), initialised to heapBase. */
  sbrkAddress: number;
  /** End of the initialised data segments. */
  dataEnd: number;
  /** The memory import's minimum, in wasm pages. */
  minPages: number;
}

/** Granularity of the diff. The probe found ~22 pages of 4 KiB differ for a small task. */
export const PAGE_SIZE = 4096;
const WORDS_PER_PAGE = PAGE_SIZE >> 2;

/**
 * How much of the C stack, below the heap base, the snapshot treats as dead. The stack of
 * quickjs-emscripten's builds is 5 MiB; wasm.ts refuses a build whose gap between static
 * data and heap base is under DEAD_STACK_BYTES + 64 KiB (the bss is a few KiB).
 */
export const DEAD_STACK_BYTES = 4 * 1024 * 1024;

/**
 * Pages wholly inside the top DEAD_STACK_BYTES of the C stack. An idle VM's stack pointer
 * is back at the heap base, so everything below it is dead: these pages are neither
 * compared, copied nor saved.
 */
export function deadStackPages(heapBase: number): { first: number; end: number } {
  return {
    first: Math.ceil((heapBase - DEAD_STACK_BYTES) / PAGE_SIZE),
    end: Math.floor(heapBase / PAGE_SIZE),
  };
}

/** Calls `visit` for every live page below `top` (a multiple of PAGE_SIZE). */
export function forEachLivePage(heapBase: number, top: number, visit: (page: number) => void) {
  const dead = deadStackPages(heapBase);
  for (let page = 0; page < dead.first; page++) visit(page);
  for (let page = dead.end; page < top / PAGE_SIZE; page++) visit(page);
}

/** Compares one page of `memory` with the same page of `base` (zeros beyond its end). */
export function pageEquals(memory: Int32Array, base: Int32Array, page: number): boolean {
  const start = page * WORDS_PER_PAGE;
  const end = start + WORDS_PER_PAGE;
  if (start >= base.length) {
    for (let i = start; i < end; i++) if (memory[i] !== 0) return false;
    return true;
  }
  for (let i = start; i < end; i++) if (memory[i] !== base[i]) return false;
  return true;
}

/** The allocator's break: the end of the heap in use. */
export function heapBreak(memory: WebAssembly.Memory, facts: BuildFacts): number {
  const brk = new Uint32Array(memory.buffer)[facts.sbrkAddress >> 2]!;
  if (brk < facts.heapBase || brk > memory.buffer.byteLength) {
    throw new Error(`heap break ${brk} is outside the heap`);
  }
  return brk;
}

export function roundUpToPage(n: number): number {
  return Math.ceil(n / PAGE_SIZE) * PAGE_SIZE;
}
