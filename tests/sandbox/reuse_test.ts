/**
 * Module-instance reuse (sandbox/wasm.ts): a disposed VM's instance and memory serve the
 * next VM after a reset. A reused VM must be indistinguishable from a new one: no global,
 * heap byte or JS-side state of the previous run, the same limits, and snapshots that
 * restore in another process.
 */
import { restoreInAnotherProcess } from "./restore_in_process.ts";
import assert from "node:assert/strict";
import { drive, errorOf, fixture, newVm, resultOf, TEST_CONTEXT } from "./drive.ts";
import {
  resolveLimits,
  takeSnapshot,
  TaskVm,
} from "../../supabase/functions/_shared/quickjs/mod.ts";
import { setVmReuse } from "../../supabase/functions/_shared/quickjs/sandbox/wasm.ts";
import {
  deadStackPages,
  PAGE_SIZE,
} from "../../supabase/functions/_shared/quickjs/sandbox/layout.ts";

const LIMITS = resolveLimits({});

/** Leaves state behind everywhere a task can: globals, prototypes, a big heap string. */
const LEAVE_STATE = `export default async function () {
  globalThis.leaked = "secret-" + "x".repeat(100000);
  Object.prototype.polluted = 42;
  Array.prototype.push = function () { return "hijacked"; };
  globalThis.keep = [];
  for (let i = 0; i < 2000; i++) globalThis.keep.push({ i, s: "leak" + i });
  return "left";
}`;

const PROBE_STATE = `export default async function () {
  const arr = [];
  arr.push(1);
  return {
    leaked: typeof globalThis.leaked,
    polluted: ({}).polluted === undefined,
    push: arr.length,
    keep: typeof globalThis.keep,
  };
}`;

/** A VM that ran LEAVE_STATE, disposed: its instance is now pooled. */
async function leaveState(): Promise<WebAssembly.Memory> {
  const vm = await newVm();
  assert.equal(resultOf(drive(vm, LEAVE_STATE)), "left");
  const memory = vm.instance.memory;
  vm.dispose();
  return memory;
}

Deno.test("a reused instance serves the next VM and shows nothing of the previous run", async () => {
  const memory = await leaveState();
  using vm = await newVm();
  assert.equal(vm.instance.memory, memory, "the pooled memory was taken");
  assert.ok(vm.instance.reuses > 0, "the instance was reused, not instantiated again");
  assert.deepEqual(resultOf(drive(vm, PROBE_STATE)), {
    leaked: "undefined",
    polluted: true,
    push: 1,
    keep: "undefined",
  });
  const bytes = new Uint8Array(vm.instance.memory.buffer);
  const needle = new TextEncoder().encode("secret-xxxxxxxx");
  const text = new TextDecoder("latin1").decode(bytes);
  assert.equal(text.indexOf(new TextDecoder("latin1").decode(needle)), -1, "old heap bytes");
});

Deno.test("a reused VM's memory equals a new instance's, byte for byte", async () => {
  // a new instance (reuse off), then a reused one (on), both set up for a restore (no reseed)
  await leaveState();
  setVmReuse(false);
  let fresh: Uint8Array;
  try {
    using vm = await TaskVm.create({ limits: LIMITS, forRestore: true });
    assert.equal(vm.instance.reuses, 0);
    fresh = new Uint8Array(vm.instance.memory.buffer.slice(0));
  } finally {
    setVmReuse(true);
  }
  await leaveState();
  using reused = await TaskVm.create({ limits: LIMITS, forRestore: true });
  assert.ok(reused.instance.reuses > 0);
  const bytes = new Uint8Array(reused.instance.memory.buffer);
  assert.equal(bytes.length, fresh.length);
  const dead = deadStackPages(reused.instance.build.facts.heapBase);
  const differing: number[] = [];
  for (let i = 0; i < bytes.length; i++) {
    if (i === dead.first * PAGE_SIZE) i = dead.end * PAGE_SIZE;
    if (bytes[i] !== fresh[i]) differing.push(i);
    if (differing.length > 10) break;
  }
  assert.deepEqual(differing, [], "bytes that differ from a new instance's");
  // the dead top of the C stack (the 4 MiB below the heap base the set-up's own frames
  // use) is never read before it is written, as for a new instance over a pooled memory
});

Deno.test("limits hold on reused VMs: memory, slice deadline; each failure leaves the next clean", async () => {
  await leaveState();
  {
    using vm = await newVm({ memoryBytes: 8 * 1024 * 1024 });
    const run = drive(
      vm,
      `export default async function () { const a = []; for (;;) a.push("x".repeat(1000) + a.length); }`,
    );
    assert.equal(errorOf(run).code, "SANDBOX_MEMORY");
  }
  await leaveState();
  {
    using vm = await newVm({ sliceMs: 100 });
    assert.ok(vm.instance.reuses > 0);
    const started = performance.now();
    const run = drive(vm, `export default async function () { for (;;) {} }`);
    assert.equal(errorOf(run).code, "SANDBOX_TIMEOUT");
    assert.ok(performance.now() - started < 5000);
  }
  // the interrupted VM's instance is reused too; the next run has its own deadline and limits
  {
    using vm = await newVm({ sliceMs: 5000 });
    assert.ok(vm.instance.reuses > 0);
    assert.equal(vm.limits.sliceMs, 5000);
    assert.deepEqual(resultOf(drive(vm, PROBE_STATE)), {
      leaked: "undefined",
      polluted: true,
      push: 1,
      keep: "undefined",
    });
  }
});

Deno.test("a VM whose wasm stack unwound mid-flight is not reused; the next VM works", async () => {
  const vm = await newVm();
  const run = drive(vm, fixture("deep_recursion.js"), { input: { via: "plain" } });
  assert.equal(errorOf(run).code, "SANDBOX_STACK");
  const crashed = !vm.isIdle();
  const instance = vm.instance;
  vm.dispose();
  using next = await newVm();
  if (crashed) {
    assert.notEqual(next.instance, instance);
    assert.notEqual(next.instance.memory, instance.memory);
  }
  assert.equal(resultOf(drive(next, `export default async () => 7;`)), 7);
});

Deno.test("a reused VM reads its own clock", async () => {
  {
    using vm = await TaskVm.create({ limits: LIMITS, now: () => 1_000_000 });
    assert.equal(resultOf(drive(vm, `export default async () => Date.now();`)), 1_000_000);
  }
  using vm = await TaskVm.create({ limits: LIMITS, now: () => 2_000_000 });
  assert.ok(vm.instance.reuses > 0);
  assert.equal(resultOf(drive(vm, `export default async () => Date.now();`)), 2_000_000);
});

Deno.test("a snapshot of a reused VM restores identically in another process", async () => {
  await leaveState();
  using vm = await TaskVm.create({ limits: LIMITS });
  assert.ok(vm.instance.reuses > 0);
  const code = `export default async function () {
    const before = [Math.random(), Math.random()];
    await tools.svc.wait();
    const after = [];
    for (let i = 0; i < 8; i++) after.push(Math.random());
    return { before, after, leaked: typeof globalThis.leaked };
  }`;
  assert.deepEqual(vm.start({ code }, null, TEST_CONTEXT), { kind: "parked", calls: [1] });
  vm.takeCalls();
  const { bytes } = await takeSnapshot(vm, { runId: TEST_CONTEXT.runId });
  vm.settle(1, { ok: true, value: null });
  const here = vm.run();
  assert.equal(here.kind, "done");
  const there = await restoreInAnotherProcess(bytes, TEST_CONTEXT.runId);
  assert.deepEqual(there.state, here);
});
