/**
 * The sandbox's limits, one at a time: CPU deadline per slice, memory, stack, result size,
 * log size and calls in flight. Each breach ends the run with its own stable code, the VM
 * can still be disposed, and the host process goes on to run the next VM.
 */
import assert from "node:assert/strict";
import { drive, type Driven, errorOf, fixture, newVm, ok, resultOf } from "./drive.ts";
import {
  getBuild,
  type Json,
  type SandboxLimits,
} from "../../supabase/functions/_shared/quickjs/mod.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
/**
 * What a deadline may overshoot by on a shared, noisy machine: QuickJS polls the interrupt
 * handler every few thousand instructions, and the host may be descheduled. The deadline
 * tests catch a deadline that does not fire at all (the test then runs into its own
 * timeout or takes many seconds), not one that is late by milliseconds.
 */
const DEADLINE_SLACK_MS = 2000;

/** Runs `code` in a fresh VM with `limits`; returns how it ended and how long it took. */
async function timed(
  code: string,
  limits: Partial<SandboxLimits>,
  input: Json = null,
): Promise<{ run: Driven; ms: number }> {
  using vm = await newVm(limits);
  const start = performance.now();
  const run = drive(vm, code, { input });
  return { run, ms: performance.now() - start };
}

/** The host is fine after a limit was hit: a new VM runs a task to the end. */
async function assertNextVmRuns(): Promise<void> {
  using vm = await newVm();
  const run = drive(vm, `export default async function () { return (await tools.a.b()).id; }`);
  assert.equal(resultOf(run), 1);
}

// ---- CPU -------------------------------------------------------------------------------

Deno.test("a microtask flood fails with SANDBOX_TIMEOUT within its sliceMs", async () => {
  const sliceMs = 100;
  const { run, ms } = await timed(fixture("microtask_flood.js"), { sliceMs });
  assert.equal(errorOf(run).code, "SANDBOX_TIMEOUT");
  assert.ok(ms < sliceMs + DEADLINE_SLACK_MS, `took ${ms} ms`);
  await assertNextVmRuns();
});

Deno.test("while (true) {} is interrupted within its deadline, and try/catch cannot swallow it", async () => {
  const sliceMs = 200;
  const { run, ms } = await timed(fixture("busy_loop.js"), { sliceMs });
  assert.equal(errorOf(run).code, "SANDBOX_TIMEOUT");
  assert.ok(ms >= sliceMs - 5, `stopped after ${ms} ms, before its deadline`);
  assert.ok(ms < sliceMs + DEADLINE_SLACK_MS, `took ${ms} ms`);
  await assertNextVmRuns();
});

Deno.test("a finally that returns cannot swallow the interrupt either", async () => {
  const sliceMs = 100;
  const { run, ms } = await timed(fixture("busy_loop_finally.js"), { sliceMs });
  assert.equal(errorOf(run).code, "SANDBOX_TIMEOUT");
  assert.ok(ms < sliceMs + DEADLINE_SLACK_MS, `took ${ms} ms`);
});

Deno.test("the deadline is per slice: a busy loop after an await is interrupted too", async () => {
  const sliceMs = 100;
  const { run, ms } = await timed(
    `export default async function () {
      await tools.svc.get();
      while (true) {}
    }`,
    { sliceMs },
  );
  assert.equal(errorOf(run).code, "SANDBOX_TIMEOUT");
  assert.equal(run.calls.length, 1);
  assert.ok(ms < sliceMs + DEADLINE_SLACK_MS, `took ${ms} ms`);
});

Deno.test("work split by awaits may take longer than one slice in total", async () => {
  // 5 slices of ~40 ms each: 200 ms in all, more than sliceMs, never more in one slice.
  const { run } = await timed(
    `export default async function () {
      for (let i = 0; i < 5; i++) {
        const end = Date.now() + 40;
        while (Date.now() < end) {}
        await tools.svc.tick(i);
      }
      return "finished";
    }`,
    { sliceMs: 100 },
  );
  assert.equal(resultOf(run), "finished");
});

// ---- memory ----------------------------------------------------------------------------

Deno.test("an allocation larger than memoryBytes fails with SANDBOX_MEMORY", async () => {
  using vm = await newVm({ memoryBytes: 8 * MiB });
  const run = drive(
    vm,
    `export default async function () { return new ArrayBuffer(16 * 1024 * 1024).byteLength; }`,
  );
  assert.equal(errorOf(run).code, "SANDBOX_MEMORY");
  await assertNextVmRuns();
});

Deno.test({
  name: "a memory bomb fails with SANDBOX_MEMORY and the host process runs the next VM",
  // Regression (fixed; via quickjs-emscripten 0.32): the bomb does fail with SANDBOX_MEMORY, but
  // it grew the wasm memory inside executePendingJobs, which makes QuickJSRuntime leak a
  // whole JSContext (see "a VM whose task grew the wasm memory can still be disposed"), so
  // dispose() aborts with "Assertion failed: list_empty(&rt->gc_obj_list)".
  fn: async () => {
    {
      using vm = await newVm({ memoryBytes: 4 * MiB, sliceMs: 20_000 });
      const run = drive(vm, fixture("memory_bomb.js"));
      assert.equal(errorOf(run).code, "SANDBOX_MEMORY");
    }
    await assertNextVmRuns();
  },
});

Deno.test({
  name: "memoryBytes bounds the wasm memory a task can take",
  // Regression (fixed): QuickJS counts allocations, not bytes, in this build. Its
  // js_def_malloc_usable_size() returns 0 under EMSCRIPTEN, so each allocation adds only
  // MALLOC_OVERHEAD (8 bytes) to malloc_size and the limit fires after ~memoryBytes/8 live
  // allocations. With memoryBytes = 4 MiB this bomb of 1 KiB strings grows the wasm memory
  // to ~360 MiB (with 16 MiB to the 2 GiB wasm maximum) before "out of memory".
  fn: async () => {
    const memoryBytes = 4 * MiB;
    const { facts } = await getBuild();
    using vm = await newVm({ memoryBytes, sliceMs: 60_000 });
    const run = drive(vm, fixture("string_memory_bomb.js"));
    assert.equal(errorOf(run).code, "SANDBOX_MEMORY");
    // Static data and C stack, the heap the limit allows, and generous room for the
    // allocator's own overhead and fragmentation.
    const bound = facts.heapBase + memoryBytes + 16 * MiB;
    const size = vm.instance.memory.buffer.byteLength;
    assert.ok(size <= bound, `wasm memory grew to ${size / MiB} MiB (bound ${bound / MiB} MiB)`);
  },
});

Deno.test({
  name: "a VM whose task grew the wasm memory can still be disposed",
  // Regression (fixed; via quickjs-emscripten 0.32): QuickJSRuntime.executePendingJobs() reads
  // the job's context pointer through an Int32Array it made before the call. A job that
  // grows the wasm memory detaches that view, the read gives undefined, and the library
  // creates (and never frees) a brand-new JSContext: runtime.contextMap gains an entry,
  // every later snapshot carries it, and dispose() aborts. TaskVm.run() must not use
  // executePendingJobs as is (see the report for two fixes).
  fn: async () => {
    const vm = await newVm({ memoryBytes: 64 * MiB }); // room for the 32 MiB buffer
    const contexts = (vm.runtime as unknown as { contextMap: Map<number, unknown> }).contextMap;
    const run = drive(
      vm,
      `export default async function () {
        await tools.svc.get();
        return new ArrayBuffer(32 * 1024 * 1024).byteLength;
      }`,
    );
    assert.equal(resultOf(run), 32 * MiB);
    assert.equal(contexts.size, 1, "the runtime has one context");
    assert.doesNotThrow(() => vm.dispose());
  },
});

// ---- stack -----------------------------------------------------------------------------

for (const via of ["plain", "map"]) {
  Deno.test({
    name: `deep recursion (${via}) fails with SANDBOX_STACK under the default limits`,
    // Regression (fixed): with the default stackBytes of 1 MiB, V8's own stack (~1 MB for the
    // whole host) overflows before QuickJS's stack check: vm.start() throws a host
    // RangeError "Maximum call stack size exceeded" out of the VM, the VM is left broken
    // (dispose() aborts), and the engine treats it as its own failure, so the run stays
    // "running" until the lease expires and then does it again.
    fn: async () => {
      using vm = await newVm();
      const run = drive(vm, fixture("deep_recursion.js"), { input: { via } });
      assert.equal(errorOf(run).code, "SANDBOX_STACK");
    },
  });

  Deno.test(`deep recursion (${via}) fails with SANDBOX_STACK when stackBytes is 128 KiB`, async () => {
    {
      using vm = await newVm({ stackBytes: 128 * KiB });
      const run = drive(vm, fixture("deep_recursion.js"), { input: { via } });
      assert.equal(errorOf(run).code, "SANDBOX_STACK");
    }
    await assertNextVmRuns();
  });
}

// ---- result and logs -------------------------------------------------------------------

Deno.test("a result over resultBytes fails with RESULT_TOO_LARGE", async () => {
  const resultBytes = 64;
  const returning = (expression: string) =>
    `export default async function () { await tools.svc.get(); return ${expression}; }`;
  // JSON of 62 characters in quotes: exactly 64 bytes.
  const at = (await timed(returning(`"x".repeat(62)`), { resultBytes })).run;
  assert.equal(resultOf(at), "x".repeat(62));
  const over = (await timed(returning(`"x".repeat(63)`), { resultBytes })).run;
  assert.equal(errorOf(over).code, "RESULT_TOO_LARGE");
  // 42 characters of JSON, 82 bytes of UTF-8: the limit is in bytes.
  const wide = (await timed(returning(`"é".repeat(40)`), { resultBytes })).run;
  assert.equal(errorOf(wide).code, "RESULT_TOO_LARGE");
});

Deno.test("logging over logBytes fails with LOG_TOO_LARGE even if the task catches the error", async () => {
  const logBytes = 1000;
  const { run } = await timed(
    `export default async function () {
      for (let i = 0; i < 100; i++) {
        try {
          console.log("line " + i + " " + "x".repeat(100));
        } catch (_e) {
          // keep going
        }
        await tools.svc.tick(i);
      }
      return "finished";
    }`,
    { logBytes },
  );
  assert.equal(errorOf(run).code, "LOG_TOO_LARGE");
  const kept = run.logs.reduce((n, l) => n + new TextEncoder().encode(l.message).length, 0);
  assert.ok(run.logs.length > 1, "the lines under the limit are kept");
  assert.ok(kept <= logBytes, `kept ${kept} bytes of logs`);
});

// ---- calls in flight -------------------------------------------------------------------

Deno.test("more than pendingCalls host calls at once fails with TOO_MANY_PENDING_CALLS", async () => {
  const pendingCalls = 10;
  const calling = (n: number) =>
    `export default async function () {
      const calls = [];
      for (let i = 0; i < ${n}; i++) {
        try {
          calls.push(tools.svc.get(i));
        } catch (_e) {
          // swallowing the error does not help
        }
      }
      return (await Promise.all(calls)).length;
    }`;
  assert.equal(resultOf((await timed(calling(10), { pendingCalls })).run), 10);
  const { run } = await timed(calling(11), { pendingCalls });
  assert.equal(errorOf(run).code, "TOO_MANY_PENDING_CALLS");
  assert.equal(run.calls.length, 10, "the 11th call never reaches the host");
});

Deno.test("pendingCalls counts calls in flight, not calls made", async () => {
  const { run } = await timed(
    `export default async function () {
      let n = 0;
      for (let i = 0; i < 25; i++) n += (await tools.svc.get(i)).id > 0 ? 1 : 0;
      return n;
    }`,
    { pendingCalls: 2 },
  );
  assert.equal(resultOf(run), 25);
});

Deno.test("calls the host leaves open keep the run parked on exactly those calls", async () => {
  using vm = await newVm();
  const run = drive(
    vm,
    `export default async function () {
      return await Promise.all([tools.fast.get(), tools.slow.get(), tools.fast.get()]);
    }`,
    { host: (call) => call.service === "fast" ? ok(call.id) : undefined },
  );
  assert.deepEqual(run.state, { kind: "parked", calls: [2] });
});
