/**
 * Saving a whole idle VM to bytes and bringing it back in any process.
 *
 * An idle VM (evalCode returned, jobs drained, the task parked on host calls) keeps all
 * of its state in the wasm linear memory; the only mutable wasm global, the C stack
 * pointer, sits at its idle value. A snapshot therefore is the memory, stored as the
 * 4 KiB pages that differ from the boot image (boot_image.ts: the memory of a fully
 * set-up VM, computed once per process), behind a header that says exactly which run,
 * build and set-up made it (snapshot_codec.ts: the byte format).
 *
 * Restore = a VM made from the boot image in a fresh module instance with memory of the
 * snapshot's size (the runtime, context and handles must land where the header says),
 * the snapshotting process's seed words written back, then the snapshot's pages XORed
 * over its memory.
 *
 * Body: gzip of the page numbers as u32 LE, then the pages, each XORed with the boot
 * image's page (the bytes a task did not change become zeros, which compress to almost
 * nothing).
 */
import type { SandboxLimits } from "./limits.ts";
import { SandboxError } from "./errors.ts";
import { getBuild, WASM_PAGE } from "./wasm.ts";
import { TaskVm } from "./vm.ts";
import { getBootImage } from "./boot_image.ts";
import { forEachLivePage, heapBreak, PAGE_SIZE, pageEquals, roundUpToPage } from "./layout.ts";
import {
  decodeSnapshot,
  encodeSnapshot,
  SNAPSHOT_FORMAT,
  type SnapshotHeader,
  type SnapshotKey,
  type SnapshotKeys,
} from "./snapshot_codec.ts";
import { gunzipSync, gzipSync } from "node:zlib";

export type { SnapshotHeader, SnapshotKey, SnapshotKeys } from "./snapshot_codec.ts";

/**
 * zlib level for the body: 6 for the common small body (a few dozen XORed pages, mostly
 * zeros: ~0.2 ms); 1 above 1 MiB, where level 6 spent ~25 ms on a 10k-object heap for
 * ~10% fewer bytes (`deno task bench`).
 */
function gzipLevel(bodyBytes: number): number {
  return bodyBytes > 1024 * 1024 ? 1 : 6;
}

export interface Snapshot {
  header: SnapshotHeader;
  bytes: Uint8Array<ArrayBuffer>;
}

export interface TakeOptions {
  /** The run the VM belongs to; written into the authenticated header. */
  runId: string;
  /** Makes the digest an HMAC and encrypts the body with this key (its id goes into the header). */
  key?: SnapshotKey;
}

export interface RestoreOptions {
  /** The run being resumed: a snapshot of another run is refused. */
  runId: string;
  /**
   * The limits of the run's task version. The VM runs under these, never under the
   * header's; a snapshot whose limits differ is refused, because the memory and stack
   * limits and the prelude's limits live inside the saved memory.
   */
  limits: SandboxLimits;
  /**
   * The key the snapshot was made with, or a key ring searched by the header's key id;
   * without one, only an unkeyed snapshot verifies.
   */
  key?: SnapshotKeys;
  /** The task's wall clock (ms since the epoch); the host's by default. */
  now?: () => number;
}

/** A restored VM and the header it was verified against (parked calls, last call id). */
export interface Restored {
  vm: TaskVm;
  header: SnapshotHeader;
}

// ---- take ------------------------------------------------------------------------------

/** Snapshots an idle, started VM. The VM stays usable. */
export async function takeSnapshot(vm: TaskVm, options: TakeOptions): Promise<Snapshot> {
  if (!vm.started) throw new Error("only a started VM can be snapshotted");
  if (!vm.isIdle()) throw new Error("the VM is not idle: jobs are queued or the C stack is live");
  const state = vm.state();
  if (state.kind !== "parked") throw new Error(`the VM is not parked (it is ${state.kind})`);
  const boot = await getBootImage(vm.instance.build.variant);
  const build = vm.instance.build;
  const memory = new Int32Array(vm.instance.memory.buffer);
  const brk = heapBreak(vm.instance.memory, build.facts);
  const pages: number[] = [];
  forEachLivePage(build.facts.heapBase, roundUpToPage(Math.max(brk, boot.end)), (page) => {
    if (boot.volatilePages.has(page) || !pageEquals(memory, boot.image, page)) pages.push(page);
  });
  const body = new Uint8Array(pages.length * 4 + pages.length * PAGE_SIZE);
  const index = new DataView(body.buffer);
  const data = new Int32Array(body.buffer, pages.length * 4);
  pages.forEach((page, i) => {
    index.setUint32(i * 4, page, true);
    xorPage(data, i, memory, boot.image, page);
  });
  const header: SnapshotHeader = {
    format: SNAPSHOT_FORMAT,
    runId: options.runId,
    keyId: options.key?.id ?? null,
    variant: build.variant,
    packageVersion: build.packageVersion,
    wasmSha256: build.wasmSha256,
    baseline: boot.fingerprint,
    seedWords: boot.seedWords.map((address) => [address, boot.image[address >> 2]! >>> 0]),
    memoryBytes: vm.instance.memory.buffer.byteLength,
    stackPointer: vm.instance.stackPointer(),
    heapBreak: brk,
    pointers: vm.pointers(),
    pageSize: PAGE_SIZE,
    pageCount: pages.length,
    bodyBytes: body.length,
    codec: "gzip",
    parkedCalls: state.calls,
    lastCallId: vm.lastCallId,
    limits: vm.limits,
    createdAt: new Date().toISOString(),
  };
  const compressed = gzipSync(body, { level: gzipLevel(body.length) });
  return { header, bytes: await encodeSnapshot(header, compressed, { key: options.key }) };
}

// ---- read ------------------------------------------------------------------------------

/** Checks the bytes and parses the header (snapshot_codec.ts). Throws SNAPSHOT_CORRUPT. */
export function readSnapshot(
  bytes: Uint8Array,
  options: { key?: SnapshotKeys } = {},
): Promise<{ header: SnapshotHeader; body: Uint8Array }> {
  return decodeSnapshot(bytes, options);
}

/** Why this process cannot restore a snapshot with this header, or undefined if it can. */
export async function incompatibility(header: SnapshotHeader): Promise<string | undefined> {
  if (header.format !== SNAPSHOT_FORMAT) {
    return `snapshot format ${header.format}; this build reads ${SNAPSHOT_FORMAT}`;
  }
  if (header.variant !== "asyncify" && header.variant !== "sync") {
    return `unknown build variant ${header.variant}`;
  }
  const build = await getBuild(header.variant);
  if (header.packageVersion !== build.packageVersion || header.wasmSha256 !== build.wasmSha256) {
    return `snapshot made by ${header.variant} ${header.packageVersion} (wasm ${
      header.wasmSha256.slice(0, 12)
    }); this process runs ${build.packageVersion} (wasm ${build.wasmSha256.slice(0, 12)})`;
  }
  const boot = await getBootImage(header.variant);
  if (header.baseline !== boot.fingerprint) {
    return "snapshot made by a different VM setup (prelude, locale or layout changed)";
  }
  if (
    JSON.stringify(header.seedWords.map(([address]) => address)) !== JSON.stringify(boot.seedWords)
  ) {
    return "snapshot's Math.random seed words are elsewhere than this set-up's";
  }
  return undefined;
}

// ---- restore ---------------------------------------------------------------------------

/**
 * A VM restored from snapshot bytes, parked on the calls the verified header lists.
 * Throws SandboxError SNAPSHOT_CORRUPT (damaged, another run's, another key's, other
 * limits) or SNAPSHOT_INCOMPATIBLE (another build or set-up); never returns a broken VM.
 */
export async function restoreSnapshot(
  bytes: Uint8Array,
  options: RestoreOptions,
): Promise<Restored> {
  const { header, body: compressed } = await decodeSnapshot(bytes, { key: options.key });
  if (header.runId !== options.runId) {
    throw new SandboxError(
      "SNAPSHOT_CORRUPT",
      `snapshot belongs to run ${header.runId}, not to run ${options.runId}`,
    );
  }
  if (canonicalJson(header.limits) !== canonicalJson(options.limits)) {
    throw new SandboxError(
      "SNAPSHOT_CORRUPT",
      `snapshot limits ${canonicalJson(header.limits)} are not the task's ` +
        canonicalJson(options.limits),
    );
  }
  const why = await incompatibility(header);
  if (why) throw new SandboxError("SNAPSHOT_INCOMPATIBLE", why);
  let body: Uint8Array;
  try {
    body = gunzipSync(compressed);
  } catch (e) {
    throw new SandboxError("SNAPSHOT_CORRUPT", "snapshot body does not decompress", { cause: e });
  }
  const { pageCount, pageSize, memoryBytes } = header;
  if (
    pageSize !== PAGE_SIZE || body.length !== header.bodyBytes ||
    body.length !== pageCount * (4 + PAGE_SIZE) || memoryBytes % WASM_PAGE !== 0
  ) {
    throw new SandboxError("SNAPSHOT_CORRUPT", "snapshot body does not match its header");
  }
  let vm: TaskVm;
  try {
    vm = await TaskVm.create({
      limits: options.limits,
      variant: header.variant,
      pages: memoryBytes / WASM_PAGE,
      forRestore: true,
      now: options.now,
    });
  } catch (e) {
    throw new SandboxError("SNAPSHOT_INCOMPATIBLE", (e as Error).message, { cause: e });
  }
  try {
    if (
      JSON.stringify(vm.pointers()) !== JSON.stringify(header.pointers) ||
      vm.instance.stackPointer() !== header.stackPointer
    ) {
      throw new SandboxError(
        "SNAPSHOT_INCOMPATIBLE",
        `this process sets the VM up at ${JSON.stringify(vm.pointers())}; ` +
          `the snapshot expects ${JSON.stringify(header.pointers)}`,
      );
    }
    const memory = new Uint8Array(vm.instance.memory.buffer);
    if (memory.length !== memoryBytes) {
      throw new SandboxError(
        "SNAPSHOT_INCOMPATIBLE",
        "fresh memory size differs from the snapshot",
      );
    }
    const index = new DataView(body.buffer, body.byteOffset, pageCount * 4);
    // a copy, aligned for Int32Array (node:zlib hands out Buffers that share a pool)
    const data = new Int32Array(new Uint8Array(body.subarray(pageCount * 4)).buffer);
    // the pages were XORed against the snapshotting process's boot image, whose seed words
    // differ from this one's: put them back first, or Math.random would resume elsewhere
    const seeds = new Uint32Array(vm.instance.memory.buffer);
    for (const [address, value] of header.seedWords) seeds[address >> 2] = value;
    const words = new Int32Array(vm.instance.memory.buffer);
    const lastPage = memoryBytes / PAGE_SIZE;
    for (let i = 0; i < pageCount; i++) {
      const page = index.getUint32(i * 4, true);
      if (page >= lastPage) throw new SandboxError("SNAPSHOT_CORRUPT", `page ${page} out of range`);
      // the page holds the boot image's (zeros beyond it): XOR gives the task's page back
      unxorPage(words, page, data, i);
    }
    vm.adoptRestoredState(options.limits);
    const state = vm.state();
    if (
      state.kind !== "parked" ||
      JSON.stringify(state.calls) !== JSON.stringify(header.parkedCalls)
    ) {
      throw new SandboxError(
        "SNAPSHOT_CORRUPT",
        `the restored VM is not parked on calls ${JSON.stringify(header.parkedCalls)} ` +
          `(it reports ${JSON.stringify(state)})`,
      );
    }
    return { vm, header };
  } catch (e) {
    vm.abandon();
    if (e instanceof SandboxError) throw e;
    throw new SandboxError("SNAPSHOT_CORRUPT", `restore failed: ${(e as Error).message}`, {
      cause: e,
    });
  }
}

// ---- helpers ---------------------------------------------------------------------------

const WORDS = PAGE_SIZE >> 2;

/** out[slot] = memory[page] XOR boot[page] (boot reads as zeros beyond its end). */
function xorPage(
  out: Int32Array,
  slot: number,
  memory: Int32Array,
  boot: Int32Array,
  page: number,
) {
  const from = page * WORDS;
  const to = slot * WORDS;
  if (from >= boot.length) {
    out.set(memory.subarray(from, from + WORDS), to);
    return;
  }
  for (let i = 0; i < WORDS; i++) out[to + i] = memory[from + i]! ^ boot[from + i]!;
}

/** memory[page] ^= data[slot] */
function unxorPage(memory: Int32Array, page: number, data: Int32Array, slot: number) {
  const at = page * WORDS;
  const from = slot * WORDS;
  for (let i = 0; i < WORDS; i++) memory[at + i]! ^= data[from + i]!;
}

/** JSON with sorted keys: two limit objects compare equal whatever their key order. */
function canonicalJson(value: SandboxLimits): string {
  return JSON.stringify(
    Object.fromEntries(Object.entries(value).sort(([a], [b]) => a < b ? -1 : 1)),
  );
}
