/**
 * Saving a whole idle VM to bytes and bringing it back in any process.
 *
 * An idle VM (evalCode returned, jobs drained, the task parked on host calls) keeps all
 * of its state in the wasm linear memory; the only mutable wasm global, the C stack
 * pointer, sits at its idle value. A snapshot therefore is the memory, stored as the
 * 4 KiB pages that differ from the boot image (vm.ts: the memory of a fully set-up VM,
 * computed once per process), behind a header that says exactly which build and set-up
 * made it. The header's `baseline` is the boot image's fingerprint.
 *
 * Restore = a VM made from the boot image in a fresh module instance with memory of the
 * snapshot's size (vm.ts checks the runtime, context and handles land where the image
 * says), then the snapshot's pages XORed back over its memory.
 *
 * Layout: MAGIC (8) | SHA-256 of everything after it (32) | header length (u32 LE) |
 *         header JSON | body (gzip of: page numbers as u32 LE, then the pages, each XORed
 *         with the boot image's page: the bytes a task did not change become zeros, which
 *         compress to almost nothing).
 */
import type { SandboxLimits } from "./limits.ts";
import { SandboxError } from "./errors.ts";
import { type BuildVariant, getBuild, WASM_PAGE } from "./wasm.ts";
import { getBootImage, TaskVm, type VmPointers } from "./vm.ts";
import { forEachLivePage, heapBreak, PAGE_SIZE, pageEquals, roundUpToPage } from "./layout.ts";
import { gunzipSync, gzipSync } from "node:zlib";

export const SNAPSHOT_FORMAT = 1;
const MAGIC = new Uint8Array([0x51, 0x4a, 0x53, 0x4e, 0x41, 0x50, 0x00, SNAPSHOT_FORMAT]); // "QJSNAP\0\1"
const DIGEST_BYTES = 32;
const PREFIX_BYTES = MAGIC.length + DIGEST_BYTES + 4;
/**
 * zlib level for the body: 6 for the common small body (a few dozen XORed pages, mostly
 * zeros: ~0.2 ms); 1 above 1 MiB, where level 6 spent ~25 ms on a 10k-object heap for
 * ~10% fewer bytes (`deno task bench`).
 */
function gzipLevel(bodyBytes: number): number {
  return bodyBytes > 1024 * 1024 ? 1 : 6;
}

export interface SnapshotHeader {
  format: number;
  variant: BuildVariant;
  packageVersion: string;
  wasmSha256: string;
  /** Fingerprint of the boot image the pages are a diff against. */
  baseline: string;
  memoryBytes: number;
  stackPointer: number;
  heapBreak: number;
  pointers: VmPointers;
  pageSize: number;
  pageCount: number;
  /** Size of the body before compression. */
  bodyBytes: number;
  codec: "gzip";
  /** Host calls the task was parked on, in call order. */
  parkedCalls: number[];
  /** The task's last call id: calls up to it are in the VM, settled or parked. */
  lastCallId: number;
  limits: SandboxLimits;
  createdAt: string;
}

export interface Snapshot {
  header: SnapshotHeader;
  bytes: Uint8Array<ArrayBuffer>;
}

// ---- take ------------------------------------------------------------------------------

/** Snapshots an idle, started VM. The VM stays usable. */
export async function takeSnapshot(vm: TaskVm): Promise<Snapshot> {
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
    variant: build.variant,
    packageVersion: build.packageVersion,
    wasmSha256: build.wasmSha256,
    baseline: boot.fingerprint,
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
  return { header, bytes: await encode(header, gzipSync(body, { level: gzipLevel(body.length) })) };
}

// ---- read ------------------------------------------------------------------------------

/** Checks the bytes and parses the header. Throws SNAPSHOT_CORRUPT. */
export async function readSnapshot(
  bytes: Uint8Array,
): Promise<{ header: SnapshotHeader; body: Uint8Array }> {
  if (bytes.length < PREFIX_BYTES || !MAGIC.every((b, i) => bytes[i] === b)) {
    if (bytes.length >= 8 && MAGIC.slice(0, 7).every((b, i) => bytes[i] === b)) {
      throw new SandboxError(
        "SNAPSHOT_INCOMPATIBLE",
        `snapshot format ${bytes[7]} is not supported (this build reads format ${SNAPSHOT_FORMAT})`,
      );
    }
    throw new SandboxError("SNAPSHOT_CORRUPT", "not a QuickJS VM snapshot (bad magic bytes)");
  }
  const digest = await sha256(bytes.subarray(MAGIC.length + DIGEST_BYTES));
  if (!digest.every((b, i) => bytes[MAGIC.length + i] === b)) {
    throw new SandboxError("SNAPSHOT_CORRUPT", "snapshot checksum mismatch: the bytes are damaged");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = view.getUint32(MAGIC.length + DIGEST_BYTES, true);
  let header: SnapshotHeader;
  try {
    header = JSON.parse(
      new TextDecoder().decode(bytes.subarray(PREFIX_BYTES, PREFIX_BYTES + headerLength)),
    );
  } catch (e) {
    throw new SandboxError("SNAPSHOT_CORRUPT", "snapshot header is not JSON", { cause: e });
  }
  return { header, body: bytes.subarray(PREFIX_BYTES + headerLength) };
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
  return undefined;
}

// ---- restore ---------------------------------------------------------------------------

/**
 * A VM restored from snapshot bytes, parked on the calls the header lists. Throws
 * SandboxError SNAPSHOT_CORRUPT or SNAPSHOT_INCOMPATIBLE; never returns a broken VM.
 */
export async function restoreSnapshot(
  bytes: Uint8Array,
  options: { now?: () => number } = {},
): Promise<TaskVm> {
  const { header, body: compressed } = await readSnapshot(bytes);
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
      limits: header.limits,
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
    const words = new Int32Array(vm.instance.memory.buffer);
    const lastPage = memoryBytes / PAGE_SIZE;
    for (let i = 0; i < pageCount; i++) {
      const page = index.getUint32(i * 4, true);
      if (page >= lastPage) throw new SandboxError("SNAPSHOT_CORRUPT", `page ${page} out of range`);
      // the page holds the boot image's (zeros beyond it): XOR gives the task's page back
      unxorPage(words, page, data, i);
    }
    vm.adoptRestoredState(header.limits);
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
    return vm;
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

async function encode(header: SnapshotHeader, body: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
  const headerBytes = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(PREFIX_BYTES + headerBytes.length + body.length);
  out.set(MAGIC, 0);
  new DataView(out.buffer).setUint32(MAGIC.length + DIGEST_BYTES, headerBytes.length, true);
  out.set(headerBytes, PREFIX_BYTES);
  out.set(body, PREFIX_BYTES + headerBytes.length);
  out.set(await sha256(out.subarray(MAGIC.length + DIGEST_BYTES)), MAGIC.length);
  return out;
}

async function sha256(bytes: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
}
