/**
 * The set-up every VM shares, and the boot image: the memory of a VM set up in full
 * (runtime, context, bridge, prelude), computed once per process and build variant.
 *
 * Every VM after that, fresh or restored, gets a new module instance, repeats only the
 * host-side half of the set-up (the runtime and context wrappers, which land at the same
 * addresses, and the bridge's host reference), and has the boot image copied into its
 * memory; a restore then writes the snapshot's pages on top. Parsing the prelude (~2 ms)
 * is paid once per process, not per VM. The handles the host keeps (the prelude's
 * internals) are rebuilt at the addresses the boot image recorded.
 */
import type { QuickJSContext, QuickJSHandle, QuickJSRuntime } from "quickjs-emscripten-core";
import { PRELUDE_SOURCE } from "./prelude.ts";
import { InterruptWatch } from "./limits.ts";
import {
  BUILD_VARIANT,
  type BuildVariant,
  getBuild,
  instantiate,
  type WasmBuild,
  type WasmInstance,
} from "./wasm.ts";
import { deadStackPages, heapBreak, PAGE_SIZE, roundUpToPage } from "./layout.ts";

/** Addresses fixed by the setup; a restore must reproduce them exactly. */
export interface VmPointers {
  runtime: number;
  context: number;
  /** The cached handle of the global object. */
  global: number;
  /** The prelude's internals object, then its methods. */
  handles: number[];
}

/** The bridge's host side: `__callHostTool__(id, service, path, args)`. */
export type HostFunction = (
  id: QuickJSHandle,
  service: QuickJSHandle,
  path: QuickJSHandle,
  args: QuickJSHandle,
) => void;

/** HostRefMap hands out ids from INT32_MIN; the bridge is the only host function. */
const BRIDGE_HOST_REF = -2147483648;

export const INTERNAL_METHODS = [
  "configure",
  "start",
  "settle",
  "status",
  "takeLogs",
  "secrets",
  "setInvocation",
] as const;
export type InternalMethod = typeof INTERNAL_METHODS[number];

/** A set-up VM: the QuickJS objects and the handles the host keeps. TaskVm owns one. */
export interface VmSetup {
  instance: WasmInstance;
  runtime: QuickJSRuntime;
  context: QuickJSContext;
  watch: InterruptWatch;
  internals: QuickJSHandle;
  methods: Record<InternalMethod, QuickJSHandle>;
}

/**
 * The host-side half of the set-up: runtime (with its interrupt handler), context, the
 * cached global handle, and the bridge's host reference. It must run identically, in
 * the same order, in the boot VM and in every VM made from its image. `finish` supplies
 * the internals handles: by evaluating the prelude (boot VM) or from the image.
 */
function setUpHost(
  instance: WasmInstance,
  bridge: HostFunction,
  finish: (context: QuickJSContext, runtime: QuickJSRuntime) => QuickJSHandle[],
): VmSetup {
  const runtime = instance.module.newRuntime();
  keepRuntimeCallbacksUntilFreed(runtime);
  const watch = new InterruptWatch();
  runtime.setInterruptHandler(watch.shouldInterrupt);
  const context = runtime.newContext();
  // ctx.global is created lazily and cached; create it now so it is part of the set-up.
  void context.global;
  const [internals, ...methodHandles] = finish(context, runtime);
  // The VM's bridge function object names its host function by this id.
  if (runtime.hostRefs.get(BRIDGE_HOST_REF as never) !== bridge) {
    throw new Error("the bridge is not the runtime's first host reference");
  }
  const methods = {} as Record<InternalMethod, QuickJSHandle>;
  INTERNAL_METHODS.forEach((name, i) => (methods[name] = methodHandles[i]!));
  return { instance, runtime, context, watch, internals: internals!, methods };
}

/** The boot VM: the full set-up, prelude included. */
async function bootSetup(build: WasmBuild): Promise<VmSetup> {
  const instance = await instantiate(build);
  const bridge: HostFunction = () => {
    throw new Error("the boot VM makes no host calls");
  };
  return setUpHost(instance, bridge, (context) => {
    const bridgeFunction = context.newFunction("__callHostTool__", bridge);
    const prelude = context.unwrapResult(context.evalCode(PRELUDE_SOURCE, "prelude.js"));
    const internals = context.unwrapResult(
      context.callFunction(prelude, context.undefined, bridgeFunction),
    );
    prelude.dispose();
    bridgeFunction.dispose();
    return [internals, ...INTERNAL_METHODS.map((name) => context.getProp(internals, name))];
  });
}

/**
 * A VM's set-up from the boot image, in a fresh instance. A fresh VM gets a new
 * Math.random seed; a VM about to be restored keeps the image's, as the snapshot's pages
 * and seed words overwrite it (snapshot.ts).
 */
export function setUpFromImage(
  instance: WasmInstance,
  boot: BootImage,
  bridge: HostFunction,
  options: { reseed: boolean },
): VmSetup {
  const memory = new Uint8Array(instance.memory.buffer);
  const image = new Uint8Array(boot.image.buffer);
  const dead = deadStackPages(boot.build.facts.heapBase);
  memory.set(image.subarray(0, dead.first * PAGE_SIZE), 0);
  memory.set(image.subarray(dead.end * PAGE_SIZE), dead.end * PAGE_SIZE);
  if (options.reseed) reseed(instance.memory, boot.seedWords);
  const setup = withImagePointers(
    instance,
    boot,
    () =>
      setUpHost(instance, bridge, (context, runtime) => {
        runtime.hostRefs.put(bridge as never);
        const heap = context.getMemory(handleValue(runtime, "rt") as never);
        return boot.pointers.handles.map((pointer) => heap.heapValueHandle(pointer as never));
      }),
  );
  const pointers = pointersOf(setup);
  if (JSON.stringify(pointers) !== JSON.stringify(boot.pointers)) {
    disposeSetup(setup);
    throw new Error(
      `VM set-up is not deterministic: ${JSON.stringify(pointers)} vs the boot image's ` +
        JSON.stringify(boot.pointers),
    );
  }
  return setup;
}

/**
 * The host-side half of the set-up over memory that already holds the C half: the boot
 * image has the runtime (its interrupt handler enabled), the context, the global object
 * and the context wrapper's scratch word at the addresses it recorded, so
 * quickjs-emscripten's constructors are answered with those addresses instead of building
 * a runtime and a context in C (~0.4 ms: every intrinsic object) only for the image to
 * overwrite them. The scratch word must be the image's own: a new allocation would take a
 * chunk the image has free, which a restored task's heap may be using. The wrappers' own
 * bookkeeping (callback tables, host references) runs as on a new VM.
 */
function withImagePointers<T>(instance: WasmInstance, boot: BootImage, setUp: () => T): T {
  const { pointers, scratchWord } = boot;
  const ffi = (instance.module as unknown as { ffi: Record<string, unknown> }).ffi;
  const glue = (instance.module as unknown as { module: Record<string, unknown> }).module;
  let scratchTaken = false;
  const answers: [Record<string, unknown>, Record<string, unknown>][] = [
    [ffi, {
      QTS_NewRuntime: () => pointers.runtime,
      QTS_NewContext: () => pointers.context,
      QTS_GetGlobalObject: () => pointers.global,
      QTS_RuntimeEnableInterruptHandler: () => {},
    }],
    [glue, {
      _malloc: (bytes: number) => {
        if (scratchTaken || bytes !== SCRATCH_BYTES) {
          throw new Error(`the set-up from the image allocated ${bytes} bytes`);
        }
        scratchTaken = true;
        return scratchWord;
      },
    }],
  ];
  const saved = answers.map(([target, stubs]) =>
    [target, Object.fromEntries(Object.keys(stubs).map((name) => [name, target[name]]))] as const
  );
  for (const [target, stubs] of answers) Object.assign(target, stubs);
  try {
    return setUp();
  } finally {
    for (const [target, original] of saved) Object.assign(target, original);
  }
}

/** The context wrapper's scratch word (QuickJSContext.uint32Out): one uint32. */
const SCRATCH_BYTES = 4;

function scratchWordOf(context: QuickJSContext): number {
  return (context as unknown as { uint32Out: { value: { ptr: number } } }).uint32Out.value.ptr;
}

/** The addresses the set-up fixed, for the boot image and the snapshot header. */
export function pointersOf(setup: VmSetup): VmPointers {
  const { runtime, context, internals, methods } = setup;
  return {
    runtime: handleValue(runtime, "rt"),
    context: handleValue(context, "ctx"),
    global: context.global.value as number,
    handles: [internals, ...INTERNAL_METHODS.map((name) => methods[name])].map((h) =>
      h.value as number
    ),
  };
}

/**
 * Frees every handle in reverse order of creation. QuickJS aborts when the runtime
 * still holds objects someone forgot to free, so a leak fails loudly here.
 */
export function disposeSetup(setup: VmSetup): void {
  for (const name of [...INTERNAL_METHODS].reverse()) setup.methods[name].dispose();
  setup.internals.dispose();
  setup.context.dispose();
  setup.runtime.dispose();
}

// ---- the boot image ---------------------------------------------------------------------

/** The memory of a fully set-up VM, computed once per process and build variant. */
export interface BootImage {
  build: WasmBuild;
  /** Memory from 0 to `end` (the set-up's heap break, rounded up to a page). */
  image: Int32Array;
  end: number;
  pointers: VmPointers;
  /** Where the set-up's context wrapper keeps its scratch word (withImagePointers). */
  scratchWord: number;
  /**
   * Word addresses that differ between two set-ups: QuickJS seeds Math.random from the
   * clock when it creates a context. Fresh VMs get new random words there; their values
   * in `image` differ from process to process, so a snapshot records them (snapshot.ts).
   */
  seedWords: number[];
  /** Pages holding those words; a snapshot always saves them. */
  volatilePages: Set<number>;
  /** Identifies the image across processes; a snapshot records the one it was diffed against. */
  fingerprint: string;
}

const bootImages = new Map<BuildVariant, Promise<BootImage>>();

export function getBootImage(variant: BuildVariant = BUILD_VARIANT): Promise<BootImage> {
  let image = bootImages.get(variant);
  if (!image) {
    image = computeBootImage(variant);
    bootImages.set(variant, image);
    image.catch(() => bootImages.delete(variant));
  }
  return image;
}

/** A boot image as it crosses to another thread of the process: its words in shared memory. */
export interface SharedBootImage {
  variant: BuildVariant;
  image: Int32Array<SharedArrayBuffer>;
  end: number;
  pointers: VmPointers;
  scratchWord: number;
  seedWords: number[];
  fingerprint: string;
}

const sharedImages = new Map<BuildVariant, Promise<SharedBootImage>>();

/**
 * This process's boot image, its words copied once into shared memory, for threads that
 * run VMs (scripts/lib/threads/): each adopts it instead of setting up two VMs of its own
 * (~100 ms of CPU and the image's ~6 MB, plus the set-ups' garbage, per thread).
 */
export function shareBootImage(variant: BuildVariant = BUILD_VARIANT): Promise<SharedBootImage> {
  let shared = sharedImages.get(variant);
  if (!shared) {
    shared = getBootImage(variant).then((boot) => {
      const image = new Int32Array(new SharedArrayBuffer(boot.image.byteLength));
      image.set(boot.image);
      const { end, pointers, scratchWord, seedWords, fingerprint } = boot;
      return { variant, image, end, pointers, scratchWord, seedWords, fingerprint };
    });
    sharedImages.set(variant, shared);
    shared.catch(() => sharedImages.delete(variant));
  }
  return shared;
}

/**
 * Uses a boot image another thread of this process made (shareBootImage), before the first
 * getBootImage of its variant. The image must be of the same build: its fingerprint names
 * the wasm's digest, and a mismatch is refused when this thread loads its build.
 */
export function adoptBootImage(shared: SharedBootImage): void {
  if (bootImages.has(shared.variant)) return;
  const adopted = getBuild(shared.variant).then((build): BootImage => {
    if (!shared.fingerprint.startsWith(`${build.variant}-${build.wasmSha256.slice(0, 12)}-`)) {
      throw new Error(`the shared boot image ${shared.fingerprint} is not of this build`);
    }
    return {
      build,
      image: shared.image,
      end: shared.end,
      pointers: shared.pointers,
      scratchWord: shared.scratchWord,
      seedWords: shared.seedWords,
      volatilePages: new Set(shared.seedWords.map((address) => Math.floor(address / PAGE_SIZE))),
      fingerprint: shared.fingerprint,
    };
  });
  bootImages.set(shared.variant, adopted);
  adopted.catch(() => bootImages.delete(shared.variant));
}

/** The context's random state is one 64-bit word: two 32-bit words, no more. */
const MAX_SEED_WORDS = 2;
/** Where in the JSContext its random state is looked for (the struct is ~1 KiB). */
const CONTEXT_SCAN_BYTES = 4096;

async function computeBootImage(variant: BuildVariant): Promise<BootImage> {
  const build = await getBuild(variant);
  const a = await bootSetup(build);
  const b = await bootSetup(build);
  try {
    const pointers = pointersOf(a);
    const scratchWord = scratchWordOf(a.context);
    if (
      JSON.stringify(pointers) !== JSON.stringify(pointersOf(b)) ||
      scratchWord !== scratchWordOf(b.context)
    ) {
      throw new Error("VM set-up is not deterministic: two set-ups placed the runtime differently");
    }
    const facts = build.facts;
    const end = roundUpToPage(
      Math.max(heapBreak(a.instance.memory, facts), heapBreak(b.instance.memory, facts)),
    );
    const image = new Int32Array(a.instance.memory.buffer.slice(0, end));
    const other = new Int32Array(b.instance.memory.buffer.slice(0, end) as ArrayBuffer);
    const dead = deadStackPages(facts.heapBase);
    // QuickJS seeds its xorshift64* state, one 8-byte-aligned uint64 in the JSContext
    // (ctx->random_state), with the clock in microseconds: two set-ups a moment apart differ
    // in its low word only, yet the high word moves every 2^32 µs (~72 minutes). Both halves
    // are seed words, or the fingerprint would change with the hour and older snapshots stop
    // restoring elsewhere. They are looked for in the context's first bytes only; that the
    // rest is identical, one digest of each set-up shows (a JS loop over all 1.4 M words cost
    // 400-480 ms of a cold start's CPU on Deno 2.1, its OSR compile queued behind the wasm's).
    const seeds = new Set<number>();
    const from = pointers.context >> 2;
    const to = Math.min(image.length, from + CONTEXT_SCAN_BYTES / 4);
    for (let i = from; i < to; i++) {
      if (image[i] !== other[i]) {
        const state = (i * 4) & ~7;
        seeds.add(state).add(state + 4);
      }
    }
    const seedWords = [...seeds].sort((x, y) => x - y);
    // anything more than the seed is a set-up that depends on something this code does not pin
    if (seedWords.length > MAX_SEED_WORDS) {
      throw new Error(`VM set-up is not deterministic: ${seedWords.length} words differ`);
    }
    const canonical = canonicalize(new Int32Array(image), seedWords, dead);
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", canonical));
    const otherDigest = new Uint8Array(
      await crypto.subtle.digest("SHA-256", canonicalize(other, seedWords, dead)),
    );
    if (digest.some((byte, i) => byte !== otherDigest[i])) {
      throw new Error(
        "VM set-up is not deterministic: two set-ups differ outside the random state",
      );
    }
    const hex = Array.from(digest, (x) => x.toString(16).padStart(2, "0")).join("");
    return {
      build,
      image,
      end,
      pointers,
      scratchWord,
      seedWords,
      volatilePages: new Set(seedWords.map((address) => Math.floor(address / PAGE_SIZE))),
      fingerprint: `${build.variant}-${build.wasmSha256.slice(0, 12)}-${hex.slice(0, 32)}`,
    };
  } finally {
    disposeSetup(a);
    disposeSetup(b);
  }
}

/** Zeroes the seed words and the dead stack, in place: what identifies an image across processes. */
function canonicalize(
  words: Int32Array<ArrayBuffer>,
  seedWords: number[],
  dead: { first: number; end: number },
): Int32Array<ArrayBuffer> {
  for (const address of seedWords) words[address >> 2] = 0;
  words.fill(0, (dead.first * PAGE_SIZE) >> 2, (dead.end * PAGE_SIZE) >> 2);
  return words;
}

/** Gives a fresh VM its own Math.random state (never all zero, which xorshift cannot leave). */
function reseed(memory: WebAssembly.Memory, seedWords: number[]): void {
  if (seedWords.length === 0) return;
  const words = new Uint32Array(memory.buffer);
  const random = crypto.getRandomValues(new Uint32Array(seedWords.length));
  seedWords.forEach((address, i) => (words[address >> 2] = random[i]! | 1));
}

function handleValue(owner: QuickJSRuntime | QuickJSContext, field: "rt" | "ctx"): number {
  return (owner as unknown as Record<string, { value: number }>)[field]!.value;
}

/**
 * quickjs-emscripten 0.32.0's asyncify module forgets a runtime's callbacks BEFORE it
 * frees the runtime (module-asyncify.ts: deleteRuntime, then QTS_FreeRuntime; the sync
 * module does it the other way round). Freeing the runtime runs the finalizers of host
 * functions, which then cannot find their runtime ("HostRef not found") and QuickJS aborts.
 * Each VM owns its module instance, so the callbacks can simply stay registered until
 * the instance is dropped.
 */
function keepRuntimeCallbacksUntilFreed(runtime: QuickJSRuntime): void {
  const callbacks = (runtime as unknown as { callbacks?: { deleteRuntime?: unknown } }).callbacks;
  if (callbacks && typeof callbacks.deleteRuntime === "function") {
    callbacks.deleteRuntime = () => {};
  }
}
