/**
 * One task's QuickJS VM: set-up, start, settle a host call, drain the job queue, and
 * report the VM's state as a value (done, failed or parked on calls).
 *
 * Set-up happens once per process in full (runtime, context, bridge, prelude), into the
 * "boot image": that VM's memory. Every VM after that, fresh or restored, gets a new
 * module instance, repeats only the host-side half of the set-up (the runtime and context
 * wrappers, which land at the same addresses, and the bridge's host reference), and has
 * the boot image copied into its memory; a restore then writes the snapshot's pages on
 * top. Parsing the prelude (~2 ms) is paid once per process, not per VM. The handles the
 * host keeps (the prelude's internals) are rebuilt at the addresses the boot image
 * recorded; no other host handle outlives a host call.
 */
import { giveBackMemory } from "./memory_pool.ts";
import type { QuickJSContext, QuickJSHandle, QuickJSRuntime } from "quickjs-emscripten";
import { PRELUDE_SOURCE } from "./prelude.ts";
import {
  DEFAULT_LIMITS,
  InterruptWatch,
  limitErrorCode,
  type SandboxLimits,
  utf8Bytes,
} from "./limits.ts";
import type { RunError } from "./errors.ts";
import {
  BUILD_VARIANT,
  type BuildVariant,
  getBuild,
  instantiate,
  type WasmBuild,
  type WasmInstance,
} from "./wasm.ts";
import { deadStackPages, heapBreak, PAGE_SIZE, roundUpToPage } from "./layout.ts";

/** JSON-compatible value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A call the task made through `__callHostTool__`. */
export interface HostCall {
  /** Sequence number in the run: 1, 2, 3, ... */
  id: number;
  service: string;
  path: string[];
  args: Json[];
}

/** How a host call ended. `value` undefined resolves the task's await with undefined. */
export type CallOutcome =
  | { ok: true; value?: Json }
  | { ok: false; error: { name: string; message: string; code?: string; data?: Json } };

export type VmState =
  | { kind: "done"; result: Json; resultJson: string }
  | { kind: "failed"; error: RunError }
  | { kind: "parked"; calls: number[] };

export interface LogEntry {
  level: "log" | "info" | "warn" | "error" | "debug";
  /** Milliseconds since the epoch, from the VM's clock. */
  at: number;
  message: string;
}

/** What the task sees as its second argument. */
export interface TaskContext {
  runId: string;
  task: string;
  attempt: number;
  [key: string]: Json;
}

export interface TaskSource {
  code: string;
  /** Shown in stack traces and syntax errors. */
  filename?: string;
}

/** Addresses fixed by the setup; a restore must reproduce them exactly. */
export interface VmPointers {
  runtime: number;
  context: number;
  /** The cached handle of the global object. */
  global: number;
  /** The prelude's internals object, then its methods. */
  handles: number[];
}

type HostFunction = (
  id: QuickJSHandle,
  service: QuickJSHandle,
  path: QuickJSHandle,
  args: QuickJSHandle,
) => void;

/** HostRefMap hands out ids from INT32_MIN; the bridge is the only host function. */
const BRIDGE_HOST_REF = -2147483648;

const INTERNAL_METHODS = ["configure", "start", "settle", "status", "takeLogs"] as const;
type InternalMethod = typeof INTERNAL_METHODS[number];

/** A file with a top-level `import` or `export` statement is an ES module. */
export function isEsModule(code: string): boolean {
  return /^\s*(export\s|export\{|import\s*[\w{*'"])/m.test(stripComments(code));
}

function stripComments(code: string): string {
  return code.replace(/\/\*[\s\S]*?\*\//g, "").replace(/(^|[^:\\])\/\/.*$/gm, "$1");
}

export class TaskVm {
  readonly instance: WasmInstance;
  readonly runtime: QuickJSRuntime;
  readonly context: QuickJSContext;
  #internals: QuickJSHandle;
  #methods: Record<InternalMethod, QuickJSHandle>;
  #watch: InterruptWatch;
  #limits: SandboxLimits;
  #newCalls: HostCall[] = [];
  #lastCallId = 0;
  #hostFailure: RunError | undefined;
  #crashed = false;
  #reuseMemory = true;
  #disposed = false;
  #started = false;
  #stderr: string[] = [];
  /** Milliseconds spent inside the VM since it was created or restored. */
  cpuMs = 0;

  private constructor(
    instance: WasmInstance,
    runtime: QuickJSRuntime,
    context: QuickJSContext,
    internals: QuickJSHandle,
    methods: Record<InternalMethod, QuickJSHandle>,
    limits: SandboxLimits,
    watch: InterruptWatch,
  ) {
    this.#watch = watch;
    this.instance = instance;
    this.runtime = runtime;
    this.context = context;
    this.#internals = internals;
    this.#methods = methods;
    this.#limits = limits;
  }

  /**
   * A VM ready to start, from the boot image. `pages` sizes its memory (a restore passes
   * the snapshot's size, so memory never grows from outside). A fresh VM gets a new
   * Math.random seed; a VM about to be restored keeps the image's, as the snapshot's
   * pages overwrite it.
   */
  static async create(
    options: {
      limits: SandboxLimits;
      variant?: BuildVariant;
      pages?: number;
      forRestore?: boolean;
      /** The task's wall clock (ms since the epoch); the host's by default. */
      now?: () => number;
    },
  ): Promise<TaskVm> {
    const boot = await getBootImage(options.variant ?? BUILD_VARIANT);
    const instance = await instantiate(
      boot.build,
      options.pages ?? wasmPagesFor(options.limits, boot.build.facts.heapBase),
      { now: options.now },
    );
    const vm = TaskVm.#hostSetup(instance, options.limits, (context, runtime, bridge) => {
      const memory = new Uint8Array(instance.memory.buffer);
      const image = new Uint8Array(boot.image.buffer);
      const dead = deadStackPages(boot.build.facts.heapBase);
      memory.set(image.subarray(0, dead.first * PAGE_SIZE), 0);
      memory.set(image.subarray(dead.end * PAGE_SIZE), dead.end * PAGE_SIZE);
      if (!options.forRestore) reseed(instance.memory, boot.seedWords);
      runtime.hostRefs.put(bridge as never);
      const heap = context.getMemory(handleValue(runtime, "rt") as never);
      return boot.pointers.handles.map((pointer) => heap.heapValueHandle(pointer as never));
    });
    const pointers = vm.pointers();
    if (JSON.stringify(pointers) !== JSON.stringify(boot.pointers)) {
      vm.dispose();
      throw new Error(
        `VM set-up is not deterministic: ${JSON.stringify(pointers)} vs the boot image's ` +
          JSON.stringify(boot.pointers),
      );
    }
    return vm;
  }

  /**
   * The host-side half of the set-up: runtime (with its interrupt handler), context, the
   * cached global handle, and the bridge's host reference. It must run identically, in
   * the same order, in the boot VM and in every VM made from its image. `finish` supplies
   * the internals handles: by evaluating the prelude (boot VM) or from the image.
   */
  static #hostSetup(
    instance: WasmInstance,
    limits: SandboxLimits,
    finish: (
      context: QuickJSContext,
      runtime: QuickJSRuntime,
      bridge: HostFunction,
    ) => QuickJSHandle[],
  ): TaskVm {
    const runtime = instance.module.newRuntime();
    keepRuntimeCallbacksUntilFreed(runtime);
    const watch = new InterruptWatch();
    runtime.setInterruptHandler(watch.shouldInterrupt);
    const context = runtime.newContext();
    // ctx.global is created lazily and cached; create it now so it is part of the set-up.
    void context.global;
    // deno-lint-ignore prefer-const
    let vm: TaskVm;
    const bridge: HostFunction = (id, service, path, args) => {
      vm.#recordCall(id, service, path, args);
    };
    const [internals, ...methodHandles] = finish(context, runtime, bridge);
    // The VM's bridge function object names its host function by this id.
    if (runtime.hostRefs.get(BRIDGE_HOST_REF as never) !== bridge) {
      throw new Error("the bridge is not the runtime's first host reference");
    }
    const methods = {} as Record<InternalMethod, QuickJSHandle>;
    INTERNAL_METHODS.forEach((name, i) => (methods[name] = methodHandles[i]!));
    vm = new TaskVm(instance, runtime, context, internals!, methods, limits, watch);
    vm.#watchHeap();
    return vm;
  }

  /** The boot VM: the full set-up, prelude included. */
  static async boot(build: WasmBuild): Promise<TaskVm> {
    const instance = await instantiate(build);
    const vm = TaskVm.#hostSetup(instance, { ...DEFAULT_LIMITS }, (context, _runtime, impl) => {
      const bridge = context.newFunction("__callHostTool__", impl);
      const prelude = context.unwrapResult(context.evalCode(PRELUDE_SOURCE, "prelude.js"));
      const internals = context.unwrapResult(
        context.callFunction(prelude, context.undefined, bridge),
      );
      prelude.dispose();
      bridge.dispose();
      return [internals, ...INTERNAL_METHODS.map((name) => context.getProp(internals, name))];
    });
    vm.#reuseMemory = false; // boot VMs are two, once per process, of another size
    return vm;
  }

  get limits(): SandboxLimits {
    return this.#limits;
  }

  /** Id of the latest host call the task made (0 before the first). */
  get lastCallId(): number {
    return this.#lastCallId;
  }

  get started(): boolean {
    return this.#started;
  }

  /** The addresses the set-up fixed, for the boot image and the snapshot header. */
  pointers(): VmPointers {
    return {
      runtime: handleValue(this.runtime, "rt"),
      context: handleValue(this.context, "ctx"),
      global: this.context.global.value as number,
      handles: [this.#internals, ...INTERNAL_METHODS.map((name) => this.#methods[name])].map((h) =>
        h.value as number
      ),
    };
  }

  /**
   * Applies the limits that live inside the VM (they travel with a snapshot) and runs the
   * task's top level, then the synchronous part of its default function.
   */
  start(source: TaskSource, input: unknown, taskContext: TaskContext): VmState {
    if (this.#started) throw new Error("the VM was started already");
    this.#started = true;
    let inputJson: string | undefined;
    try {
      inputJson = JSON.stringify(input ?? null);
    } catch (e) {
      inputJson = undefined;
      this.#hostFailure = {
        code: "INPUT_NOT_SERIALIZABLE",
        name: "TypeError",
        message: `the input is not JSON: ${(e as Error).message}`,
      };
    }
    if (inputJson === undefined) {
      this.#hostFailure ??= {
        code: "INPUT_NOT_SERIALIZABLE",
        name: "TypeError",
        message: "the input is not JSON",
      };
      return this.state();
    }
    this.runtime.setMemoryLimit(this.#limits.memoryBytes);
    this.runtime.setMaxStackSize(this.#limits.stackBytes);
    const ctx = this.context;
    let module = isEsModule(source.code);
    this.#enter(() => {
      const limitsJson = JSON.stringify({
        logBytes: this.#limits.logBytes,
        resultBytes: this.#limits.resultBytes,
        pendingCalls: this.#limits.pendingCalls,
      });
      this.#call("configure", [ctx.newString(limitsJson)]);
      let loaded = ctx.evalCode(source.code, source.filename ?? "task.js", {
        type: module ? "module" : "global",
      });
      if (!module && loaded.error && isModuleSyntaxError(ctx.dump(loaded.error))) {
        // an `export` or `import` the line-start check missed (minified code): a syntax
        // error stops the parse before anything ran, so parsing again as a module is safe
        loaded.error.dispose();
        module = true;
        loaded = ctx.evalCode(source.code, source.filename ?? "task.js", { type: "module" });
      }
      if (loaded.error) {
        const error = ctx.dump(loaded.error) as unknown;
        loaded.error.dispose();
        this.#hostFailure = loadError(error);
        return;
      }
      using target = loaded.value;
      this.#call("start", [
        ctx.newString(module ? "module" : "commonjs"),
        module ? target.dup() : ctx.undefined,
        ctx.newString(inputJson),
        ctx.newString(JSON.stringify(taskContext)),
      ]);
    });
    return this.run();
  }

  /**
   * Delivers a host call's outcome. Returns false when the VM has no such call parked.
   * A secret value is remembered inside the VM, whose console then prints it as [secret]
   * (also after a snapshot and a restore).
   */
  settle(id: number, outcome: CallOutcome, options: { secret?: boolean } = {}): boolean {
    const ctx = this.context;
    return this.#enter(() => {
      const payload = outcome.ok
        ? outcome.value === undefined ? ctx.undefined : ctx.newString(JSON.stringify(outcome.value))
        : ctx.newString(JSON.stringify(outcome.error));
      const known = this.#call("settle", [
        ctx.newNumber(id),
        outcome.ok ? ctx.true : ctx.false,
        payload,
        options.secret ? ctx.true : ctx.false,
      ]);
      return known === true;
    }) ?? false;
  }

  /** Runs every pending job until the queue is empty, then reports the state. */
  run(): VmState {
    this.#enter(() => {
      for (;;) {
        const result = this.runtime.executePendingJobs(-1);
        if (result.error) {
          const error = this.context.dump(result.error) as unknown;
          result.error.dispose();
          this.#hostFailure = jobError(error);
          return;
        }
        if (result.value === 0) return;
      }
    });
    return this.state();
  }

  /** The VM's state as a value. Never leaves a settled task looking pending. */
  state(): VmState {
    if (this.#hostFailure) return { kind: "failed", error: this.#hostFailure };
    const text = this.#enter(() => this.#call("status", []) as string);
    if (this.#hostFailure) return { kind: "failed", error: this.#hostFailure };
    const status = JSON.parse(text as string) as {
      state: "idle" | "running" | "done" | "failed";
      result?: Json;
      error?: VmErrorDescription;
      pending: number[];
      lastCallId: number;
    };
    this.#lastCallId = Math.max(this.#lastCallId, status.lastCallId);
    switch (status.state) {
      case "done": {
        const resultJson = JSON.stringify(status.result);
        if (utf8Bytes(resultJson) > this.#limits.resultBytes) {
          return {
            kind: "failed",
            error: {
              code: "RESULT_TOO_LARGE",
              name: "LimitError",
              message: `the task's result is larger than ${this.#limits.resultBytes} bytes`,
            },
          };
        }
        return { kind: "done", result: status.result ?? null, resultJson };
      }
      case "failed": {
        const error = toRunError(status.error);
        // at the hard end of memory QuickJS cannot even allocate its "out of memory" error
        if (error.code === "TASK_ERROR" && this.#outOfMemory()) {
          return { kind: "failed", error: this.#memoryError() };
        }
        return { kind: "failed", error };
      }
      default:
        if (
          status.state === "running" && status.pending.length === 0 &&
          !this.runtime.hasPendingJob()
        ) {
          // nothing in the VM can run and no host call can settle anything
          return {
            kind: "failed",
            error: {
              code: "TASK_DEADLOCK",
              name: "TaskDeadlock",
              message: "the task awaits a promise that nothing can settle " +
                "(no host call is pending and no job is queued)",
            },
          };
        }
        return { kind: "parked", calls: status.pending };
    }
  }

  /** True when the task made calls that were not taken yet. */
  get hasNewCalls(): boolean {
    return this.#newCalls.length > 0;
  }

  /** Calls the task made since the last take, in call order. */
  takeCalls(): HostCall[] {
    const calls = this.#newCalls;
    this.#newCalls = [];
    return calls;
  }

  takeLogs(): LogEntry[] {
    if (this.#crashed || this.#disposed) return [];
    const text = this.#enter(() => this.#call("takeLogs", []) as string);
    return text ? JSON.parse(text) as LogEntry[] : [];
  }

  /** True when nothing runs in the VM: no job queued and the C stack unwound. */
  isIdle(): boolean {
    return !this.#crashed && !this.runtime.hasPendingJob() &&
      this.instance.stackPointer() === this.instance.build.facts.heapBase;
  }

  /** Marks the VM as restored from a snapshot of a started VM (see snapshot.ts). */
  adoptRestoredState(limits: SandboxLimits): void {
    this.#limits = limits;
    this.#watchHeap();
    this.#started = true;
    this.#newCalls = [];
    this.state();
  }

  /** Bytes the QuickJS allocator holds, and the wasm memory size. */
  memoryUsage(): { heapBytes: number; wasmBytes: number } {
    const usage = this.runtime.computeMemoryUsage();
    const dumped = this.context.dump(usage) as { memory_used_size: number };
    usage.dispose();
    return {
      heapBytes: dumped.memory_used_size,
      wasmBytes: this.instance.memory.buffer.byteLength,
    };
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  /**
   * Frees every handle in reverse order of creation. QuickJS aborts when the runtime
   * still holds objects someone forgot to free, so a leak fails loudly here.
   */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    if (this.#crashed) return; // a trapped instance cannot free; drop it whole
    for (const name of [...INTERNAL_METHODS].reverse()) this.#methods[name].dispose();
    this.#internals.dispose();
    this.context.dispose();
    this.runtime.dispose();
    // the instance is done with its memory: reuse it rather than leave it to V8's next GC
    if (this.#reuseMemory) giveBackMemory(this.instance.memory);
  }

  /** Drops a VM whose memory cannot be trusted, without running QuickJS's teardown. */
  abandon(): void {
    this.#disposed = true;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  // ---- internals --------------------------------------------------------------------

  #watchHeap(): void {
    const facts = this.instance.build.facts;
    this.#watch.watchHeap(
      this.instance.memory,
      facts.sbrkAddress,
      facts.heapBase + this.#limits.memoryBytes,
    );
  }

  /** The heap reached its limit, or the memory's hard end (where even errors cannot be made). */
  #outOfMemory(): boolean {
    const facts = this.instance.build.facts;
    const brk = new Uint32Array(this.instance.memory.buffer)[facts.sbrkAddress >> 2]!;
    return this.#watch.heapOverLimit() ||
      brk > this.instance.memory.buffer.byteLength - MEMORY_HEADROOM_MIN / 2;
  }

  #memoryError(): RunError {
    return {
      code: "SANDBOX_MEMORY",
      name: "InternalError",
      message: `out of memory: the task used more than its ${this.#limits.memoryBytes} bytes`,
    };
  }

  #recordCall(
    idHandle: QuickJSHandle,
    serviceHandle: QuickJSHandle,
    pathHandle: QuickJSHandle,
    argsHandle: QuickJSHandle,
  ): void {
    const ctx = this.context;
    const id = ctx.getNumber(idHandle);
    // Only the prelude can call the bridge, and it numbers calls 1, 2, 3, ...
    if (id !== this.#lastCallId + 1) {
      throw new Error(`host call id ${id} out of sequence (expected ${this.#lastCallId + 1})`);
    }
    this.#lastCallId = id;
    this.#newCalls.push({
      id,
      service: ctx.getString(serviceHandle),
      path: JSON.parse(ctx.getString(pathHandle)) as string[],
      args: JSON.parse(ctx.getString(argsHandle)) as Json[],
    });
  }

  /** Calls an internals method; consumes the argument handles; returns the dumped result. */
  #call(method: InternalMethod, args: QuickJSHandle[]): unknown {
    const ctx = this.context;
    try {
      const result = ctx.callFunction(this.#methods[method], ctx.undefined, ...args);
      if (result.error) {
        const error = ctx.dump(result.error) as unknown;
        result.error.dispose();
        this.#hostFailure ??= jobError(error);
        return undefined;
      }
      const value = ctx.dump(result.value) as unknown;
      result.value.dispose();
      return value;
    } finally {
      for (const arg of args) if (arg.alive) arg.dispose();
    }
  }

  /** Every entry into the VM: arm the CPU deadline, time it, and turn traps into failures. */
  #enter<T>(body: () => T): T | undefined {
    if (this.#disposed) throw new Error("the VM was disposed");
    if (this.#crashed) return undefined;
    const start = performance.now();
    this.#watch.arm(this.#limits.sliceMs, start);
    try {
      return body();
    } catch (e) {
      if (e instanceof RangeError && /call stack/i.test(e.message)) {
        // V8's own stack, which every QuickJS frame also uses, ran out before QuickJS's
        // limit; the wasm call stack unwound mid-flight, so the VM is not usable
        this.#crashed = true;
        this.#hostFailure = {
          code: "SANDBOX_STACK",
          name: "InternalError",
          message: "stack overflow: the task recursed deeper than the host allows",
        };
        return undefined;
      }
      if (e instanceof WebAssembly.RuntimeError || isAbort(e)) {
        this.#crashed = true;
        this.#hostFailure = {
          code: "SANDBOX_CRASH",
          name: "SandboxCrash",
          message: `the QuickJS VM trapped: ${(e as Error).message}`,
        };
        return undefined;
      }
      throw e;
    } finally {
      this.#watch.disarm();
      this.cpuMs += performance.now() - start;
      if (this.#watch.fired === "memory" && !this.#hostFailure) {
        this.#hostFailure = this.#memoryError();
      } else if (this.#watch.fired === "time" && !this.#hostFailure) {
        this.#hostFailure = {
          code: "SANDBOX_TIMEOUT",
          name: "SandboxTimeout",
          message: `the task ran for more than ${this.#limits.sliceMs} ms without awaiting; ` +
            "split long synchronous work with `await checkpoint()`",
        };
      }
    }
  }
}

// ---- the boot image ---------------------------------------------------------------------

/** The memory of a fully set-up VM, computed once per process and build variant. */
export interface BootImage {
  build: WasmBuild;
  /** Memory from 0 to `end` (the set-up's heap break, rounded up to a page). */
  image: Int32Array;
  end: number;
  pointers: VmPointers;
  /**
   * Word addresses that differ between two set-ups: QuickJS seeds Math.random from the
   * clock when it creates a context. Fresh VMs get new random words there.
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

async function computeBootImage(variant: BuildVariant): Promise<BootImage> {
  const build = await getBuild(variant);
  const a = await TaskVm.boot(build);
  const b = await TaskVm.boot(build);
  try {
    const pointers = a.pointers();
    if (JSON.stringify(pointers) !== JSON.stringify(b.pointers())) {
      throw new Error("VM set-up is not deterministic: two set-ups placed the runtime differently");
    }
    const facts = build.facts;
    const end = roundUpToPage(
      Math.max(heapBreak(a.instance.memory, facts), heapBreak(b.instance.memory, facts)),
    );
    const image = new Int32Array(a.instance.memory.buffer.slice(0, end));
    const other = new Int32Array(b.instance.memory.buffer, 0, end >> 2);
    const dead = deadStackPages(facts.heapBase);
    const seedWords: number[] = [];
    for (let i = 0; i < image.length; i++) {
      const page = Math.floor((i * 4) / PAGE_SIZE);
      if (page >= dead.first && page < dead.end) continue;
      if (image[i] !== other[i]) seedWords.push(i * 4);
    }
    // The context's random state is one 64-bit word; anything more is a set-up that
    // depends on something this code does not pin.
    if (seedWords.length > 2) {
      throw new Error(`VM set-up is not deterministic: ${seedWords.length} words differ`);
    }
    const canonical = new Int32Array(image);
    for (const address of seedWords) canonical[address >> 2] = 0;
    canonical.fill(0, (dead.first * PAGE_SIZE) >> 2, (dead.end * PAGE_SIZE) >> 2);
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", canonical));
    const hex = Array.from(digest, (x) => x.toString(16).padStart(2, "0")).join("");
    return {
      build,
      image,
      end,
      pointers,
      seedWords,
      volatilePages: new Set(seedWords.map((address) => Math.floor(address / PAGE_SIZE))),
      fingerprint: `${build.variant}-${build.wasmSha256.slice(0, 12)}-${hex.slice(0, 32)}`,
    };
  } finally {
    a.dispose();
    b.dispose();
  }
}

/** Gives a fresh VM its own Math.random state (never all zero, which xorshift cannot leave). */
function reseed(memory: WebAssembly.Memory, seedWords: number[]): void {
  if (seedWords.length === 0) return;
  const words = new Uint32Array(memory.buffer);
  const random = crypto.getRandomValues(new Uint32Array(seedWords.length));
  seedWords.forEach((address, i) => (words[address >> 2] = random[i]! | 1));
}

interface VmErrorDescription {
  code?: string;
  name: string;
  message: string;
  stack?: string;
  cause?: VmErrorDescription;
}

function toRunError(e: VmErrorDescription | undefined, depth = 0): RunError {
  if (!e) return { code: "TASK_ERROR", name: "Error", message: "the task failed" };
  const code = limitErrorCode(e.name, e.message) ?? e.code ?? "TASK_ERROR";
  const out: RunError = { code, name: e.name, message: e.message };
  if (e.stack) out.stack = e.stack;
  if (e.cause && depth < 8) out.cause = toRunError(e.cause, depth + 1);
  return out;
}

/** An error thrown while the task's code loads: a syntax error names line and column. */
function loadError(dumped: unknown): RunError {
  const e = (typeof dumped === "object" && dumped !== null ? dumped : {}) as {
    name?: string;
    message?: string;
    stack?: string;
  };
  const name = e.name ?? "Error";
  const message = e.message ?? String(dumped);
  if (name === "SyntaxError") {
    const at = /:(\d+):(\d+)/.exec(e.stack ?? "");
    const where = at ? ` at line ${at[1]}, column ${at[2]}` : "";
    return { code: "TASK_SYNTAX", name, message: `${message}${where}`, stack: e.stack ?? "" };
  }
  return toRunError({ name, message, ...(e.stack ? { stack: e.stack } : {}) });
}

function jobError(dumped: unknown): RunError {
  const e = (typeof dumped === "object" && dumped !== null ? dumped : {}) as {
    name?: string;
    message?: string;
    stack?: string;
  };
  return toRunError({
    name: e.name ?? "Error",
    message: e.message ?? String(dumped),
    ...(e.stack ? { stack: e.stack } : {}),
  });
}

function isModuleSyntaxError(dumped: unknown): boolean {
  const e = dumped as { name?: string; message?: string } | null;
  return e?.name === "SyntaxError" && /\b(export|import)\b/.test(e.message ?? "");
}

/**
 * Memory past the heap limit, for the allocations between two interrupt checks and for
 * QuickJS to build its "out of memory" error when a single allocation fails.
 */
const MEMORY_HEADROOM_MIN = 4 * 1024 * 1024;

/** Wasm pages for a VM: static data and C stack (below heapBase), the heap limit, headroom. */
export function wasmPagesFor(limits: SandboxLimits, heapBase: number): number {
  const headroom = Math.max(MEMORY_HEADROOM_MIN, limits.memoryBytes / 8);
  return Math.ceil((heapBase + limits.memoryBytes + headroom) / 65536);
}

function isAbort(e: unknown): boolean {
  return e instanceof Error && /^Aborted\(/.test(e.message);
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
