/**
 * The QuickJS wasm build the sandbox runs on: which variant, where its bytes are, and the
 * facts about its memory layout that the snapshot code needs, all derived from the wasm
 * file itself. Every VM gets a module instance over its own WebAssembly.Memory, new or
 * a disposed VM's reset to exactly a new one's state (instantiate, resetInstance); the
 * compiled WebAssembly.Module is shared.
 */
import { takeInstance, takeMemory } from "./memory_pool.ts";
import {
  newQuickJSAsyncWASMModuleFromVariant,
  newVariant,
  type QuickJSAsyncWASMModule,
  type QuickJSWASMModule,
} from "quickjs-emscripten-core";
import asyncifyPackage from "@jitl/quickjs-wasmfile-release-asyncify/package.json" with {
  type: "json",
};
import {
  type BuildFacts,
  DEAD_STACK_BYTES,
  deadStackPages,
  heapBreak,
  PAGE_SIZE,
  roundUpToPage,
} from "./layout.ts";
import { SandboxError } from "./errors.ts";

/**
 * The QuickJS wasm cannot be read: neither the npm package's file (a deployed bundle does
 * not carry it; Deno 2.1 cannot fetch npm: URLs) nor the copy `deno task prepare-deploy`
 * vendors for the package version in use. Code WASM_MISSING; cause: why the package's file
 * could not be read.
 */
export class WasmMissingError extends SandboxError {
  override name = "WasmMissingError";
  constructor(message: string, options?: { cause?: unknown }) {
    super("WASM_MISSING", message, options);
  }
}

/**
 * The one build the product runs on. The asyncify build is what lets a host function
 * suspend the C stack (used only where no snapshot can happen, such as module loading);
 * the bridge itself never suspends. `deno task bench` measures it against "sync", which
 * only the dev entry registers (dev/sync_build.ts), so a deploy never carries it.
 */
export const BUILD_VARIANT: BuildVariant = "asyncify";
export type BuildVariant = "asyncify" | "sync";

/** 64 KiB, the unit of WebAssembly.Memory. */
export const WASM_PAGE = 65536;
/** The wasm declares its memory import with a maximum of 32768 pages (2 GiB). */
export const MAX_WASM_PAGES = 32768;

/**
 * emscripten writes `_=<thisProgram>` and `LANG=<navigator.language>.UTF-8` into the C
 * environment, which QuickJS's libc init copies onto the heap: a different script path or
 * locale shifts every heap pointer, and a snapshot would not restore. Both are pinned.
 */
const PINNED_THIS_PROGRAM = "qjs";
const PINNED_LANGUAGE = "en-US";

/** Where a build's wasm and emscripten glue come from, and how its module is made. */
export interface VariantSource {
  packageName: string;
  version: string;
  wasmUrl: () => string;
  load: () => Promise<unknown>;
  /** quickjs-emscripten's module over a variant made by newVariant(). */
  newModule: (variant: unknown) => Promise<QuickJSAsyncWASMModule | QuickJSWASMModule>;
}

const SOURCES: Partial<Record<BuildVariant, VariantSource>> = {
  asyncify: {
    packageName: "@jitl/quickjs-wasmfile-release-asyncify",
    version: asyncifyPackage.version,
    wasmUrl: () => import.meta.resolve("@jitl/quickjs-wasmfile-release-asyncify/wasm"),
    // A static import of a variant package fails `deno check`; a dynamic one does not.
    load: () => import("@jitl/quickjs-wasmfile-release-asyncify").then((m) => m.default),
    newModule: (variant) => newQuickJSAsyncWASMModuleFromVariant(variant as never),
  },
};

/**
 * Makes another build available in this process: the dev entry registers the sync build
 * for the benchmark and the tests that compare against it. The product knows only
 * BUILD_VARIANT. Registering the same variant twice keeps the first.
 */
export function registerVariant(variant: BuildVariant, source: VariantSource): void {
  SOURCES[variant] ??= source;
}

function sourceOf(variant: BuildVariant): VariantSource {
  const source = SOURCES[variant];
  if (!source) {
    throw new Error(
      `the QuickJS ${variant} build is not registered in this process ` +
        "(only the dev entry registers it: registerSyncBuild() from dev.ts)",
    );
  }
  return source;
}

export interface WasmBuild {
  variant: BuildVariant;
  packageName: string;
  packageVersion: string;
  /** Hex SHA-256 of the wasm file. */
  wasmSha256: string;
  compiled: WebAssembly.Module;
  variantModule: unknown;
  facts: BuildFacts;
}

const builds = new Map<BuildVariant, Promise<WasmBuild>>();

/** Loads (once per process) and analyses a build. */
export function getBuild(variant: BuildVariant = BUILD_VARIANT): Promise<WasmBuild> {
  let build = builds.get(variant);
  if (!build) {
    build = loadBuild(variant, shared.get(variant));
    builds.set(variant, build);
    build.catch(() => builds.delete(variant));
  }
  return build;
}

/**
 * Where `deno task prepare-deploy` copies the wasm files: a deployed edge function carries
 * only the files its config.toml lists as static_files, not the npm package's .wasm.
 */
export const VENDORED_WASM_DIR = new URL("./wasm/", import.meta.url);

/** Modules compiled by another thread of this process (shareCompiled). */
const shared = new Map<BuildVariant, WebAssembly.Module>();

/**
 * Uses a module another thread of this process compiled (a worker's threads get the main
 * thread's, scripts/lib/threads/): V8 then shares its machine code instead of compiling and
 * tiering it up once per thread (~10–30 MB each). Before the first getBuild of the variant.
 */
export function shareCompiled(compiled: WebAssembly.Module, variant = BUILD_VARIANT): void {
  if (!builds.has(variant)) shared.set(variant, compiled);
}

async function loadBuild(
  variant: BuildVariant,
  compiled?: WebAssembly.Module,
): Promise<WasmBuild> {
  const source = sourceOf(variant);
  const bytes = await readBuildBytes(variant);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return {
    variant,
    packageName: source.packageName,
    packageVersion: source.version,
    wasmSha256: Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join(""),
    compiled: compiled ?? await WebAssembly.compile(bytes),
    variantModule: await source.load(),
    facts: analyseWasm(bytes),
  };
}

/**
 * The npm package's wasm (`packageUrl` for tests); failing that, the copy prepare-deploy
 * vendored for the same package version (in `vendoredDir`, for tests); failing that, a
 * WasmMissingError that says what to run.
 */
export async function readBuildBytes(
  variant: BuildVariant,
  packageUrl?: string,
  vendoredDir: URL = VENDORED_WASM_DIR,
): Promise<Uint8Array<ArrayBuffer>> {
  const source = sourceOf(variant);
  try {
    return await readWasm(packageUrl ?? source.wasmUrl());
  } catch (packageError) {
    const vendored = new URL(`${variant}.wasm`, vendoredDir);
    const why = `cannot read the QuickJS wasm of ${source.packageName} (${
      (packageError as Error).message
    })`;
    let recorded: { packageVersion?: string };
    try {
      recorded = JSON.parse(await Deno.readTextFile(new URL(`${variant}.json`, vendoredDir)));
    } catch {
      throw new WasmMissingError(
        `${why} and no vendored copy exists in ${vendoredDir.pathname}: run ` +
          "`deno task prepare-deploy` before `supabase functions deploy`",
        { cause: packageError },
      );
    }
    if (recorded.packageVersion !== source.version) {
      throw new WasmMissingError(
        `the vendored QuickJS wasm is from ${source.packageName} ${recorded.packageVersion}, ` +
          `the code is ${source.version}: run \`deno task prepare-deploy\` again`,
        { cause: packageError },
      );
    }
    try {
      return await Deno.readFile(vendored);
    } catch (e) {
      throw new WasmMissingError(
        `${why} and the vendored copy ${vendored.pathname} cannot be read (${
          (e as Error).message
        }): run \`deno task prepare-deploy\``,
        { cause: e },
      );
    }
  }
}

async function readWasm(url: string): Promise<Uint8Array<ArrayBuffer>> {
  if (url.startsWith("file:")) return await Deno.readFile(new URL(url));
  const response = await fetch(url);
  if (!response.ok) throw new Error(`cannot fetch the QuickJS wasm at ${url}: ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

export interface WasmInstance {
  build: WasmBuild;
  memory: WebAssembly.Memory;
  module: QuickJSAsyncWASMModule | QuickJSWASMModule;
  /** Current value of the C stack pointer. */
  stackPointer(): number;
  /** What emscripten printed (assertion messages before an abort). */
  stderr: string[];
  /** The wall clock the VM reads (Date.now by default); rebound when the instance is reused. */
  setClock(now: (() => number) | undefined): void;
  /** How many VMs this instance served before the current one (0 for a new instance). */
  reuses: number;
}

/**
 * Whether a disposed VM's module instance is kept with its pooled memory and reset for the
 * next VM instead of instantiating again (setVmReuse). On by default: the pool is the
 * memory pool's, counted by engine/admission.ts as before. QUICKJS_VM_REUSE=0 turns it off
 * for a process (a kill switch; `deno task bench:peers` compares with it).
 */
let reuseInstances = readReuseEnv();

function readReuseEnv(): boolean {
  try {
    return Deno.env.get("QUICKJS_VM_REUSE") !== "0";
  } catch {
    return true; // no env access: the default
  }
}

/** Turns module-instance reuse on or off in this process (benchmarks, tests). */
export function setVmReuse(enabled: boolean): void {
  reuseInstances = enabled;
}

export function vmReuseEnabled(): boolean {
  return reuseInstances;
}

/**
 * A module instance's memory right after emscripten initialised it (data segments, the
 * C environment, constructors), from 0 to its heap break: what a reused instance is reset
 * to before a new runtime is made in it. Per build, captured from the first instance.
 */
const pristineImages = new WeakMap<WasmBuild, Uint8Array>();

function capturePristine(build: WasmBuild, memory: WebAssembly.Memory): void {
  if (pristineImages.has(build)) return;
  const end = roundUpToPage(heapBreak(memory, build.facts));
  const image = new Uint8Array(memory.buffer.slice(0, end));
  // the far end of the C stack may hold a pooled memory's old bytes: a new Memory's zeros
  const dead = deadStackPages(build.facts.heapBase);
  image.fill(0, dead.first * PAGE_SIZE, Math.min(end, dead.end * PAGE_SIZE));
  pristineImages.set(build, image);
}

/** The JS-side state of quickjs-emscripten's module that outlives a runtime. */
interface ModuleCallbacks {
  runtimeCallbacks: Map<number, unknown>;
  contextCallbacks: Map<number, unknown>;
  suspended?: unknown;
}

function callbacksOf(module: WasmInstance["module"]): ModuleCallbacks | undefined {
  const callbacks = (module as unknown as { callbacks?: ModuleCallbacks }).callbacks;
  return callbacks?.runtimeCallbacks instanceof Map &&
      callbacks.contextCallbacks instanceof Map
    ? callbacks
    : undefined;
}

/**
 * True when an instance whose runtime was freed can serve another VM: reuse is on, the
 * C stack is unwound (stack pointer at its base), no asyncify suspension is open, and
 * quickjs-emscripten's callback tables can be reset. vm.ts asks before pooling it.
 */
export function canReuse(instance: WasmInstance): boolean {
  if (!reuseInstances || !pristineImages.has(instance.build)) return false;
  const callbacks = callbacksOf(instance.module);
  return callbacks !== undefined && callbacks.suspended === undefined &&
    instance.stackPointer() === instance.build.facts.heapBase;
}

/**
 * Resets a pooled instance to the state of a new one: its memory (already zeroed by
 * giveBackMemory up to the previous run's heap break but for the dead top of the C stack;
 * above the break it was never written) gets the pristine image over [0, end) but for that
 * dead stack, so every byte that is read before written equals a new instance's; quickjs-emscripten's runtime and context callback tables are emptied; the
 * clock and the stderr buffer are the new VM's. The wasm globals need nothing: the stack
 * pointer is back at its base (canReuse), asyncify's state is normal when nothing is
 * suspended, and emscripten's other globals are fixed at initialisation.
 */
function resetInstance(instance: WasmInstance, now: (() => number) | undefined): boolean {
  const pristine = pristineImages.get(instance.build);
  const callbacks = callbacksOf(instance.module);
  if (!pristine || !callbacks || callbacks.suspended !== undefined) return false;
  if (instance.stackPointer() !== instance.build.facts.heapBase) return false;
  // all but the dead top of the C stack, never read before it is written (layout.ts): as
  // for a new instance over a pooled memory, its bytes do not matter, and skipping it saves
  // a 4 MiB copy
  const bytes = new Uint8Array(instance.memory.buffer);
  const dead = deadStackPages(instance.build.facts.heapBase);
  bytes.set(pristine.subarray(0, dead.first * PAGE_SIZE), 0);
  bytes.set(pristine.subarray(dead.end * PAGE_SIZE), dead.end * PAGE_SIZE);
  callbacks.runtimeCallbacks.clear();
  callbacks.contextCallbacks.clear();
  instance.stderr.length = 0;
  instance.setClock(now);
  instance.reuses++;
  return true;
}

/**
 * A fresh module instance over a memory of exactly `pages` wasm pages that can never grow:
 * that bounds the VM's memory in bytes (QuickJS's own limit counts allocations in this
 * build, not bytes) and keeps emscripten's views of the memory valid (quickjs-emscripten
 * 0.32 reads through a stale view when a job grows memory). V8 commits pages lazily.
 * When the pooled memory comes with the instance of a disposed VM (and reuse is on), that
 * instance is reset (resetInstance) instead: the same bytes and JS-side state as a new one.
 */
export async function instantiate(
  build: WasmBuild,
  pages?: number,
  options: { now?: () => number } = {},
): Promise<WasmInstance> {
  const size = Math.min(
    MAX_WASM_PAGES,
    Math.max(build.facts.minPages, pages ?? build.facts.minPages),
  );
  const pooledMemory = takeMemory(
    size,
    reuseInstances ? (kept) => (kept as WasmInstance).build === build : undefined,
  );
  if (pooledMemory) {
    const kept = takeInstance<WasmInstance>(pooledMemory);
    if (
      kept && reuseInstances && kept.build === build && kept.memory === pooledMemory &&
      resetInstance(kept, options.now)
    ) {
      return kept;
    }
  }
  const memory = pooledMemory ?? new WebAssembly.Memory({ initial: size, maximum: size });
  const stderr: string[] = [];
  let exports: WebAssembly.Exports | undefined;
  let clock: () => number = options.now ?? (() => Date.now());
  const variant = newVariant(build.variantModule as never, {
    wasmMemory: memory,
    emscriptenModule: {
      thisProgram: PINNED_THIS_PROGRAM,
      // emscripten prints its aborts (a failed QuickJS assertion) before it throws them; the
      // thrown RuntimeError carries the same text, so keep stdout and stderr clean
      print: (text: string) => stderr.push(text),
      printErr: (text: string) => stderr.push(text),
      instantiateWasm(
        imports: WebAssembly.Imports,
        onSuccess: (instance: WebAssembly.Instance, module: WebAssembly.Module) => void,
      ) {
        replaceWallClock(imports, () => clock());
        const instance = new WebAssembly.Instance(build.compiled, imports);
        exports = instance.exports;
        onSuccess(instance, build.compiled);
        return instance.exports;
      },
    } as never,
  });
  const module = await withPinnedLanguage(() => sourceOf(build.variant).newModule(variant));
  if (module.getWasmMemory() !== memory) throw new Error("QuickJS did not use the given memory");
  const stackSave = exports?.[build.facts.stackSaveExport];
  if (typeof stackSave !== "function") throw new Error("stackSave export not found");
  capturePristine(build, memory);
  return {
    build,
    memory,
    module,
    stackPointer: stackSave as () => number,
    stderr,
    setClock: (now) => (clock = now ?? (() => Date.now())),
    reuses: 0,
  };
}

/**
 * Points the VM's wall clock (Date.now, new Date(): emscripten's one `() => Date.now()`
 * import) at the engine's clock, so a task sees the same time its sleeps are measured in,
 * also when tests or the local runner move that clock ahead.
 */
function replaceWallClock(imports: WebAssembly.Imports, now: () => number): void {
  for (const module of Object.values(imports)) {
    for (const [name, value] of Object.entries(module)) {
      if (typeof value === "function" && /^\(\)\s*=>\s*Date\.now\(\)$/.test(String(value))) {
        (module as Record<string, unknown>)[name] = () => now();
      }
    }
  }
}

/**
 * emscripten reads `globalThis.navigator.language` once, while the module initialises.
 * Shadow it with a pinned value for that time; nested and concurrent loads share one
 * shadow, and the original property comes back when the last load ends.
 */
let pinDepth = 0;
let savedNavigator: PropertyDescriptor | undefined;
async function withPinnedLanguage<T>(load: () => Promise<T>): Promise<T> {
  if (pinDepth++ === 0) {
    savedNavigator = Object.getOwnPropertyDescriptor(globalThis, "navigator");
    const original = globalThis.navigator;
    const pinned = Object.create(original ?? null, {
      language: { value: PINNED_LANGUAGE, enumerable: true },
    });
    Object.defineProperty(globalThis, "navigator", { value: pinned, configurable: true });
  }
  try {
    return await load();
  } finally {
    if (--pinDepth === 0) {
      if (savedNavigator) Object.defineProperty(globalThis, "navigator", savedNavigator);
      else delete (globalThis as { navigator?: unknown }).navigator;
    }
  }
}

// ---- reading the wasm binary ---------------------------------------------------------

/** Reads the facts the snapshot code relies on; throws if the build does not have them. */
export function analyseWasm(bytes: Uint8Array): BuildFacts {
  const r = new WasmReader(bytes);
  let importedFunctions = 0;
  let minPages = 0;
  let heapBase: number | undefined;
  const functionExports = new Map<number, string>();
  const smallBodies = new Map<number, Uint8Array>();
  const data = new Map<number, Uint8Array>();
  r.pos = 8;
  while (r.pos < bytes.length) {
    const id = r.byte();
    const size = r.u32();
    const end = r.pos + size;
    if (id === 2) { // imports
      for (let n = r.u32(); n > 0; n--) {
        r.name();
        r.name();
        const kind = r.byte();
        if (kind === 0) (r.u32(), importedFunctions++);
        else if (kind === 1) (r.byte(), r.limits());
        else if (kind === 2) minPages = r.limits();
        else if (kind === 3) (r.byte(), r.byte());
      }
    } else if (id === 6) { // globals: the first is emscripten's stack pointer
      r.u32();
      r.byte();
      r.byte();
      if (r.byte() !== 0x41) throw new Error("wasm: global 0 is not an i32 constant");
      heapBase = r.s32();
    } else if (id === 7) { // exports
      for (let n = r.u32(); n > 0; n--) {
        const name = r.name();
        const kind = r.byte();
        const index = r.u32();
        if (kind === 0) functionExports.set(index, name);
      }
    } else if (id === 10) { // code
      let index = importedFunctions;
      for (let n = r.u32(); n > 0; n--, index++) {
        const bodySize = r.u32();
        if (bodySize <= 8 && functionExports.has(index)) {
          smallBodies.set(index, bytes.subarray(r.pos, r.pos + bodySize));
        }
        r.pos += bodySize;
      }
    } else if (id === 11) { // data: active segments at constant offsets
      for (let n = r.u32(); n > 0; n--) {
        const flags = r.u32();
        if (flags !== 0) throw new Error("wasm: unexpected data segment kind " + flags);
        if (r.byte() !== 0x41) throw new Error("wasm: data offset is not an i32 constant");
        const offset = r.s32();
        if (r.byte() !== 0x0b) throw new Error("wasm: data offset expression too long");
        const length = r.u32();
        data.set(offset, bytes.subarray(r.pos, r.pos + length));
        r.pos += length;
      }
    }
    r.pos = end;
  }
  if (heapBase === undefined) throw new Error("wasm: no stack pointer global");
  // stackSave: no locals, `global.get 0`, `end`
  let stackSaveExport: string | undefined;
  for (const [index, body] of smallBodies) {
    if (
      body.length === 4 && body[0] === 0 && body[1] === 0x23 && body[2] === 0 && body[3] === 0x0b
    ) {
      stackSaveExport = functionExports.get(index);
    }
  }
  if (!stackSaveExport) throw new Error("wasm: no stackSave export");
  // sbrk_val is the one aligned word of initialised data equal to the heap base. Segments
  // are laid into one image first: the optimiser splits them at runs of zeros, so a
  // word's trailing zero bytes may belong to no segment.
  let dataEnd = 0;
  for (const [offset, segment] of data) dataEnd = Math.max(dataEnd, offset + segment.length);
  const image = new Uint8Array(dataEnd + 4);
  for (const [offset, segment] of data) image.set(segment, offset);
  const words = new Uint32Array(image.buffer, 0, image.length >> 2);
  const sbrkCandidates: number[] = [];
  for (let i = 0; i < words.length; i++) if (words[i] === heapBase) sbrkCandidates.push(i * 4);
  if (sbrkCandidates.length !== 1) {
    throw new Error(`wasm: expected one sbrk_val candidate, found ${sbrkCandidates.length}`);
  }
  // The C stack lies between the static data and the heap base: snapshots skip its top
  // DEAD_STACK_BYTES (layout.ts), which must leave the bss (a few KiB) untouched.
  if (heapBase - dataEnd < DEAD_STACK_BYTES + 65536) {
    throw new Error(
      `wasm: the C stack (${heapBase - dataEnd} bytes) is smaller than the limits assume`,
    );
  }
  return { stackSaveExport, heapBase, sbrkAddress: sbrkCandidates[0]!, dataEnd, minPages };
}

class WasmReader {
  pos = 0;
  constructor(private readonly bytes: Uint8Array) {}
  byte(): number {
    const b = this.bytes[this.pos++];
    if (b === undefined) throw new Error("wasm: unexpected end");
    return b;
  }
  u32(): number {
    let result = 0;
    let shift = 0;
    for (;;) {
      const b = this.byte();
      result += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if (b < 0x80) return result;
    }
  }
  s32(): number {
    let result = 0;
    let shift = 0;
    let b: number;
    do {
      b = this.byte();
      result |= (b & 0x7f) << shift;
      shift += 7;
    } while (b >= 0x80);
    return shift < 32 && b & 0x40 ? result | (-1 << shift) : result;
  }
  name(): string {
    const length = this.u32();
    const s = new TextDecoder().decode(this.bytes.subarray(this.pos, this.pos + length));
    this.pos += length;
    return s;
  }
  /** Reads limits and returns the minimum. */
  limits(): number {
    const flags = this.byte();
    const min = this.u32();
    if (flags & 1) this.u32();
    return min;
  }
}
