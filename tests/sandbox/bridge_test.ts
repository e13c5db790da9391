/**
 * The host-call bridge: every await on a host call ends when the host settles it, in any
 * order and through any combinator, and what the task calls is what the host sees.
 * The system this replaces left runs "running" with idle VMs and fed results to the wrong
 * call; these tests name those failures.
 */
import assert from "node:assert/strict";
import {
  drive,
  errorOf,
  fail,
  fixture,
  type Host,
  newVm,
  ok,
  resultOf,
  TEST_CONTEXT,
} from "./drive.ts";

Deno.test("a task awaiting a host call is never left pending after the call settles", async () => {
  using vm = await newVm();
  let state = vm.start({ code: fixture("nested_awaits.js") }, null, TEST_CONTEXT);
  assert.deepEqual(state, { kind: "parked", calls: [1] });
  const calls = vm.takeCalls();
  assert.deepEqual(calls, [{ id: 1, service: "svc", path: ["get"], args: [] }]);
  assert.equal(vm.settle(1, ok(1)), true);
  state = vm.run();
  // One settle and one drain take the task through three async frames to its return.
  assert.deepEqual(state, { kind: "done", result: 5, resultJson: "5" });
  assert.equal(vm.runtime.hasPendingJob(), false);
  assert.equal(vm.isIdle(), true);
});

Deno.test("100 chained awaits on host calls each get their own call's result", async () => {
  using vm = await newVm();
  const run = drive(vm, fixture("chained_awaits.js"), {
    input: { n: 100 },
    host: (call) => ok((call.args[0] as number) + (call.args[1] as number)),
  });
  assert.equal(resultOf(run), 4950);
  assert.deepEqual(run.calls.map((c) => c.id), Array.from({ length: 100 }, (_, i) => i + 1));
  let total = 0;
  for (const [i, call] of run.calls.entries()) {
    assert.deepEqual(call.args, [total, i]);
    total += i;
  }
});

/** Values: get(x) resolves with 10x; fail(x) rejects with code E_V. */
const valueHost: Host = (call) =>
  call.path[0] === "fail"
    ? fail("VError", `no ${call.args[0]}`, "E_V")
    : ok((call.args[0] as number) * 10);

Deno.test("Promise.all over host calls settled in reverse order keeps the input order", async () => {
  using vm = await newVm();
  const run = drive(
    vm,
    `export default async function () {
      const order = [];
      const calls = [1, 2, 3].map((i) => tools.v.get(i));
      calls.forEach((p, i) => p.then(() => order.push(i + 1)));
      const values = await Promise.all(calls);
      return { values, order };
    }`,
    { host: valueHost, reverse: true },
  );
  assert.deepEqual(resultOf(run), { values: [10, 20, 30], order: [3, 2, 1] });
});

Deno.test("Promise.race over host calls settled in reverse order is won by the last call", async () => {
  using vm = await newVm();
  const run = drive(
    vm,
    `export default async function () {
      return await Promise.race([tools.v.get(1), tools.v.get(2), tools.v.get(3)]);
    }`,
    { host: valueHost, reverse: true },
  );
  assert.equal(resultOf(run), 30);
  assert.equal(run.calls.length, 3);
});

Deno.test("Promise.allSettled over host calls settled in reverse order reports each outcome", async () => {
  using vm = await newVm();
  const run = drive(
    vm,
    `export default async function () {
      const outcomes = await Promise.allSettled([tools.v.get(1), tools.v.fail(2), tools.v.get(3)]);
      return outcomes.map((o) => o.status === "fulfilled" ? o.value : o.reason.code + ": " + o.reason.message);
    }`,
    { host: valueHost, reverse: true },
  );
  assert.deepEqual(resultOf(run), [10, "E_V: no 2", 30]);
});

Deno.test("Promise.any over host calls settled in reverse order takes the first success", async () => {
  using vm = await newVm();
  const run = drive(
    vm,
    `export default async function () {
      const first = await Promise.any([tools.v.get(1), tools.v.fail(2), tools.v.fail(3)]);
      try {
        await Promise.any([tools.v.fail(4), tools.v.fail(5)]);
        return "not reached";
      } catch (e) {
        return { first, name: e.name, errors: e.errors.map((x) => x.message) };
      }
    }`,
    { host: valueHost, reverse: true },
  );
  // Calls 3 and 2 reject before 1 resolves; Promise.any handles them, so nothing is unhandled.
  assert.deepEqual(resultOf(run), { first: 10, name: "AggregateError", errors: ["no 4", "no 5"] });
});

Deno.test("a host rejection caught in try/catch/finally keeps its name, message and code", async () => {
  using vm = await newVm();
  const run = drive(vm, fixture("host_error_caught.js"), {
    host: (call) =>
      call.path[0] === "read"
        ? fail("NotFoundError", "missing.txt does not exist", "E_NOT_FOUND")
        : ok("closed"),
  });
  assert.deepEqual(resultOf(run), [
    {
      isError: true,
      name: "NotFoundError",
      message: "missing.txt does not exist",
      code: "E_NOT_FOUND",
    },
    "closed",
  ]);
});

Deno.test("an unhandled rejection of a host call fails the run with UNHANDLED_REJECTION", async () => {
  using vm = await newVm();
  const run = drive(
    vm,
    `export default async function () {
      tools.svc.forgotten();
      await tools.svc.next();
      return "done";
    }`,
    { host: (call) => call.path[0] === "forgotten" ? fail("Error", "lost") : ok(1) },
  );
  const error = errorOf(run);
  assert.equal(error.code, "UNHANDLED_REJECTION");
  assert.match(error.message, /host call 1/);
});

Deno.test("a host rejection the task handles does not fail the run", async () => {
  using vm = await newVm();
  const run = drive(
    vm,
    `export default async function () {
      const handled = tools.svc.forgotten();
      handled.catch(() => {});
      await tools.svc.next();
      return "done";
    }`,
    { host: (call) => call.path[0] === "forgotten" ? fail("Error", "lost") : ok(1) },
  );
  assert.equal(resultOf(run), "done");
});

Deno.test("async generators iterate over host calls with for await, and finally runs on break", async () => {
  using vm = await newVm();
  const pages: Record<string, { items: number[]; next: string | null }> = {
    "a:null": { items: [1, 2], next: "a2" },
    "a:a2": { items: [3], next: null },
    "b:null": { items: [10, 11, 12], next: "b2" },
    "b:b2": { items: [13], next: null },
  };
  const run = drive(vm, fixture("async_generator.js"), {
    host: (call) =>
      call.path[0] === "list" ? ok(pages[`${call.args[0]}:${call.args[1]}`]!) : ok(null),
  });
  assert.deepEqual(resultOf(run), { all: [1, 2, 3], firstTwo: [10, 11] });
  assert.deepEqual(run.calls.map((c) => [c.path[0], ...c.args]), [
    ["list", "a", null],
    ["list", "a", "a2"],
    ["close", "a"],
    ["list", "b", null],
    ["close", "b"],
  ]);
});

Deno.test("tools.svc.a.b(x, y) arrives as service svc, path [a, b], args [x, y]", async () => {
  using vm = await newVm();
  const run = drive(
    vm,
    `export default async function () {
      return await tools.svc.a.b({ x: 1 }, [2, "y"]);
    }`,
  );
  const call = { id: 1, service: "svc", path: ["a", "b"], args: [{ x: 1 }, [2, "y"]] };
  assert.deepEqual(run.calls, [call]);
  assert.deepEqual(resultOf(run), call);
});

Deno.test("awaiting tools.x looks up then and makes no call", async () => {
  using vm = await newVm();
  const run = drive(
    vm,
    `export default async function () {
      const a = await tools.x;
      const b = await tools.svc.method;
      const c = await Promise.resolve(tools.svc);
      return [typeof a, typeof b, typeof c, typeof tools.svc.then];
    }`,
  );
  assert.deepEqual(run.calls, []);
  assert.deepEqual(resultOf(run), ["function", "function", "function", "undefined"]);
});

Deno.test("sleep and sleepUntil arrive as calls to the sleep service", async () => {
  using vm = await newVm();
  const run = drive(vm, fixture("sleeps.js"), { host: () => ok() });
  assert.equal(resultOf(run), "awake");
  assert.deepEqual(run.calls, [
    { id: 1, service: "sleep", path: [], args: ["2 hours"] },
    { id: 2, service: "sleep", path: [], args: [90000] },
    { id: 3, service: "sleep", path: ["until"], args: ["2030-01-02T03:04:05.000Z"] },
  ]);
});

Deno.test("settling a call the VM is not parked on returns false and changes nothing", async () => {
  using vm = await newVm();
  const state = vm.start(
    { code: `export default async function () { return await tools.svc.get(); }` },
    null,
    TEST_CONTEXT,
  );
  assert.deepEqual(state, { kind: "parked", calls: [1] });
  assert.equal(vm.settle(2, ok("wrong call")), false);
  assert.equal(vm.settle(0, ok("wrong call")), false);
  assert.deepEqual(vm.run(), { kind: "parked", calls: [1] });
  assert.equal(vm.settle(1, ok("right call")), true);
  assert.deepEqual(vm.run(), { kind: "done", result: "right call", resultJson: '"right call"' });
  assert.equal(vm.settle(1, ok("again")), false);
  assert.deepEqual(vm.state(), { kind: "done", result: "right call", resultJson: '"right call"' });
});

Deno.test({
  name: "a task waiting on a promise that can never settle fails instead of parking on no calls",
  // Regression (fixed): the VM reports { kind: "parked", calls: [] } although nothing can ever
  // wake it; the engine then suspends with no parked calls, suspend_run refuses
  // (NOT_PARKED), and the run sits in "running" until its lease expires, again and again.
  fn: async () => {
    using vm = await newVm();
    const run = drive(vm, fixture("promise_never_settles.js"));
    assert.equal(vm.isIdle(), true);
    assert.equal(run.state.kind, "failed", `ended ${JSON.stringify(run.state)}`);
  },
});

Deno.test("thousands of host calls leave the heap where it was (nothing accumulates per call)", async () => {
  using vm = await newVm();
  const facts = vm.instance.build.facts;
  const heapBreak = () => new Uint32Array(vm.instance.memory.buffer)[facts.sbrkAddress >> 2]!;
  let state = vm.start(
    { code: `export default async function () { for (;;) await tools.svc.ping(1); }` },
    null,
    TEST_CONTEXT,
  );
  const roundTrips = (n: number) => {
    for (let i = 0; i < n; i++) {
      const [call] = vm.takeCalls();
      assert.ok(call && state.kind === "parked");
      vm.settle(call.id, ok(i));
      state = vm.run();
    }
  };
  roundTrips(500); // warm: the allocator reaches its working set
  const warm = heapBreak();
  roundTrips(3000);
  // a per-call leak of even one small block would move the break by tens of KiB here
  assert.equal(heapBreak(), warm, `the heap grew by ${heapBreak() - warm} bytes`);
});
