/**
 * One task's QuickJS VM: start, settle a host call, drain the job queue, and report the
 * VM's state as a value (done, failed or parked on calls). Its set-up comes from the boot
 * image (boot_image.ts); what it throws becomes a run's error in vm_errors.ts. No host
 * handle outlives a host call, apart from the prelude's internals the set-up rebuilt.
 */
import { giveBackMemory } from "./memory_pool.ts";
import type { QuickJSContext, QuickJSHandle, QuickJSRuntime } from "quickjs-emscripten-core";
import type { InterruptWatch, SandboxLimits } from "./limits.ts";
import type { RunError } from "./errors.ts";
import {
  BUILD_VARIANT,
  type BuildVariant,
  canReuse,
  instantiate,
  type WasmInstance,
} from "./wasm.ts";
import {
  disposeSetup,
  getBootImage,
  type HostFunction,
  type InternalMethod,
  pointersOf,
  setUpFromImage,
  type VmPointers,
  type VmSetup,
} from "./boot_image.ts";
import {
  isAbort,
  isModuleSyntaxError,
  jobError,
  loadError,
  toRunError,
  type VmErrorDescription,
} from "./vm_errors.ts";
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
  /** The run's attempt: 1 unless the task's @retry restarted it from its input. */
  attempt: number;
  /** The invocation running it now (1, 2, … as it suspends and resumes); updated on restore. */
  invocation?: number;
  [key: string]: Json | undefined;
}

export interface TaskSource {
  code: string;
  /** Shown in stack traces and syntax errors. */
  filename?: string;
}

/** A file with a top-level `import` or `export` statement is an ES module. */
export function isEsModule(code: string): boolean {
  return /^\s*(export\s|export\{|import\s*[\w{*'"])/m.test(stripComments(code));
}

function stripComments(code: string): string {
  return code.replace(/\/\*[\s\S]*?\*\//g, "").replace(/(^|[^:\\])\/\/.*$/gm, "$1");
}

/** Whether dispose runs QuickJS's teardown, which checks for leaked objects (setVmTeardown). */
let teardown = false;

/** Makes every VM's dispose free its objects in QuickJS first: a leak check, for tests. */
export function setVmTeardown(enabled: boolean): void {
  teardown = enabled;
}

export class TaskVm {
  readonly instance: WasmInstance;
  readonly runtime: QuickJSRuntime;
  readonly context: QuickJSContext;
  #setup: VmSetup;
  #methods: Record<InternalMethod, QuickJSHandle>;
  #watch: InterruptWatch;
  #limits: SandboxLimits;
  #newCalls: HostCall[] = [];
  #lastCallId = 0;
  #hostFailure: RunError | undefined;
  #hostBytes = 0;
  #crashed = false;
  #disposed = false;
  #started = false;
  /** Milliseconds spent inside the VM since it was created or restored. */
  cpuMs = 0;

  private constructor(setup: VmSetup, limits: SandboxLimits) {
    this.#setup = setup;
    this.#watch = setup.watch;
    this.instance = setup.instance;
    this.runtime = setup.runtime;
    this.context = setup.context;
    this.#methods = setup.methods;
    this.#limits = limits;
    this.#watchHeap();
  }

  /**
   * A VM ready to start, from the boot image. `pages` sizes its memory (a restore passes
   * the snapshot's size, so memory never grows from outside). A fresh VM gets a new
   * Math.random seed; a VM about to be restored keeps the image's, which the restore
   * replaces with the seed words and pages of the snapshot (snapshot.ts).
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
    // deno-lint-ignore prefer-const
    let vm: TaskVm;
    const bridge: HostFunction = (id, service, path, args) => {
      vm.#recordCall(id, service, path, args);
    };
    const setup = setUpFromImage(instance, boot, bridge, { reseed: !options.forRestore });
    vm = new TaskVm(setup, options.limits);
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
    return pointersOf(this.#setup);
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
      this.#configure();
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
      const json = outcome.ok
        ? outcome.value === undefined ? undefined : JSON.stringify(outcome.value)
        : JSON.stringify(outcome.error);
      this.#hostBytes += json?.length ?? 0;
      const payload = json === undefined ? ctx.undefined : ctx.newString(json);
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
        // the prelude refused a result over resultBytes before it left the VM
        return {
          kind: "done",
          result: status.result ?? null,
          resultJson: JSON.stringify(status.result),
        };
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

  /** Tells the task (ctx.invocation) which invocation runs it now: after a restore. */
  setInvocation(invocation: number): void {
    if (this.#crashed || this.#disposed) return;
    const ctx = this.context;
    this.#enter(() => this.#call("setInvocation", [ctx.newNumber(invocation)]));
  }

  takeLogs(): LogEntry[] {
    if (this.#crashed || this.#disposed) return [];
    const text = this.#enter(() => this.#call("takeLogs", []) as string);
    return text ? JSON.parse(text) as LogEntry[] : [];
  }

  /**
   * The secret values the VM has received (kv secrets, as strings of 4 characters or more,
   * raw and JSON-escaped): the host replaces them in whatever it stores. They live in the
   * VM's heap, so a restored VM still knows them.
   */
  secretValues(): string[] {
    if (this.#crashed || this.#disposed) return [];
    const text = this.#enter(() => this.#call("secrets", []) as string);
    return text ? JSON.parse(text) as string[] : [];
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
    // the in-VM limits are the task version's, and the invocation's host bytes start at 0
    this.#enter(() => this.#configure());
    this.state();
  }

  /**
   * Bytes of arguments and results that crossed the bridge since the VM was created or
   * restored (the engine suspends the run past half of limits.hostBytes).
   */
  get hostBytes(): number {
    return this.#hostBytes;
  }

  /** True when the invocation should end so the run continues with a fresh host budget. */
  get hostBytesSpent(): boolean {
    return this.#hostBytes >= this.#limits.hostBytes / 2;
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
   * Gives the VM's memory back (and its module instance, when it can be reset). QuickJS's
   * own teardown is skipped: whatever the memory holds is overwritten by the next VM's
   * boot image or zeroed, so freeing every object first (~0.4 ms of a trivial run's ~1)
   * would be thrown away. With setVmTeardown(true) (the sandbox tests) it runs: every
   * handle freed in reverse order of creation, and QuickJS aborts when the runtime still
   * holds objects someone forgot to free, so a leak fails loudly.
   */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    if (this.#crashed) return; // a trapped instance cannot free; drop it whole
    if (teardown) disposeSetup(this.#setup);
    // the instance is done with its memory: reuse it rather than leave it to V8's next GC
    const memory = this.instance.memory;
    const facts = this.instance.build.facts;
    let used: number;
    try {
      used = roundUpToPage(heapBreak(memory, facts));
    } catch {
      return; // a break outside the heap: the memory cannot be trusted, V8 frees it
    }
    // what a new VM's set-up and a restore rely on: the live pages (layout.ts)
    const dead = deadStackPages(facts.heapBase);
    // its module instance goes with it when it can be reset to a new one's (wasm.ts)
    giveBackMemory(
      memory,
      [[0, dead.first * PAGE_SIZE], [dead.end * PAGE_SIZE, used]],
      canReuse(this.instance) ? this.instance : undefined,
    );
  }

  /** Drops a VM whose memory cannot be trusted, without running QuickJS's teardown. */
  abandon(): void {
    this.#disposed = true;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  // ---- internals --------------------------------------------------------------------

  /** Gives the prelude the limits it checks inside the VM (and resets its host bytes). */
  #configure(): void {
    const l = this.#limits;
    const limitsJson = JSON.stringify({
      logBytes: l.logBytes,
      resultBytes: l.resultBytes,
      pendingCalls: l.pendingCalls,
      argsBytes: l.argsBytes,
      hostBytes: l.hostBytes,
      sliceMs: l.sliceMs,
      memoryBytes: l.memoryBytes,
    });
    this.#call("configure", [this.context.newString(limitsJson)]);
  }

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
    const argsJson = ctx.getString(argsHandle);
    this.#hostBytes += argsJson.length;
    this.#newCalls.push({
      id,
      service: ctx.getString(serviceHandle),
      path: JSON.parse(ctx.getString(pathHandle)) as string[],
      args: JSON.parse(argsJson) as Json[],
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
      } else if (
        this.#watch.fired === "time" &&
        // an interrupt inside a promise job (a microtask flood) can surface as an error with
        // no message; the deadline's own error says what happened
        (!this.#hostFailure || this.#hostFailure.code === "SANDBOX_TIMEOUT" ||
          !this.#hostFailure.message)
      ) {
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
