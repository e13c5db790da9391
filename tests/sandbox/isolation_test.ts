/**
 * What a task cannot do: reach the host, forge or settle host calls, replace the bridge, or
 * confuse it by rewriting the built-ins it uses.
 */
import assert from "node:assert/strict";
import { drive, echo, fail, fixture, type Host, newVm, ok, resultOf } from "./drive.ts";

Deno.test("no Deno or host global is reachable, and import() rejects", async () => {
  using vm = await newVm();
  const run = drive(vm, fixture("probe_globals.js"));
  const result = resultOf(run) as {
    types: Record<string, string>;
    imports: Record<string, string>;
    indirectDeno: string;
  };
  for (const [name, type] of Object.entries(result.types)) {
    assert.equal(type, "undefined", `typeof ${name}`);
  }
  assert.equal(result.types.Deno, "undefined");
  assert.equal(result.types.fetch, "undefined");
  assert.equal(result.types.process, "undefined");
  assert.equal(result.types.require, "undefined");
  assert.equal(result.indirectDeno, "undefined");
  assert.equal(Object.keys(result.imports).length, 4);
  for (const [specifier, outcome] of Object.entries(result.imports)) {
    assert.match(outcome, /^rejected/, `import("${specifier}")`);
  }
  assert.deepEqual(run.calls, []);
});

Deno.test("a static import of a host module fails the run, not the host", async () => {
  using vm = await newVm();
  const run = drive(
    vm,
    `import fs from "node:fs";\nexport default async function () { return 1; }`,
  );
  assert.equal(run.state.kind, "failed");
});

Deno.test("the task cannot forge or settle call ids, nor replace the bridge", async () => {
  // the walk of everything reachable calls guarded built-ins (c_loop_guards.ts) some 10,000
  // times, ~1.5 s on a loaded machine: more than the default slice
  using vm = await newVm({ sliceMs: 10_000 });
  const run = drive(vm, fixture("forge_bridge.js"));
  const result = resultOf(run) as {
    assignments: Record<string, string>;
    results: unknown[];
    found: string[];
    visited: number;
  };
  // Every assignment throws (module code is strict).
  assert.equal(Object.keys(result.assignments).length, 6);
  for (const [target, outcome] of Object.entries(result.assignments)) {
    assert.equal(outcome, "TypeError", `assigning ${target}`);
  }
  // Calls arrive numbered 1, 2, 3 whatever the task passed or redefined.
  assert.deepEqual(run.calls, [
    { id: 1, service: "svc", path: ["a"], args: [1] },
    { id: 2, service: "svc", path: ["b"], args: [2] },
    { id: 3, service: "svc", path: ["settle"], args: [3, true, '"forged"'] },
  ]);
  // Each await got its own call's result from the host, none a forged value.
  assert.deepEqual(result.results, run.calls);
  // Nothing reachable from globalThis leads to the prelude's internals.
  assert.deepEqual(result.found, []);
  assert.ok(result.visited > 500, `the walk visited only ${result.visited} objects`);
});

Deno.test("a parked call stays parked until the host settles it, whatever the task does", async () => {
  using vm = await newVm();
  const run = drive(
    vm,
    `export default async function () {
      const call = tools.svc.wait();
      // Try to settle call 1 from inside: through the bridge, the proxy and the promise.
      try { __callHostTool__.call(null, "svc", ["settle"], [1, true, "1"]); } catch (_e) {}
      try { tools.settle(1, true, "1"); } catch (_e) {}
      try { Promise.prototype.then.call(call, () => {}); } catch (_e) {}
      return await call;
    }`,
    { host: (call) => call.path[0] === "wait" ? undefined : ok("not for call 1") },
  );
  assert.deepEqual(run.state, { kind: "parked", calls: [1] });
  assert.equal(vm.settle(1, ok("from the host")), true);
  assert.deepEqual(vm.run(), {
    kind: "done",
    result: "from the host",
    resultJson: '"from the host"',
  });
});

const overrideHost: Host = (call) =>
  call.path[0] === "fail" ? fail("ServiceError", "it failed", "E_SVC") : echo(call);

Deno.test("overriding JSON, Map, WeakSet and Promise.prototype.then in the task does not break the bridge", async () => {
  using vm = await newVm();
  const run = drive(vm, fixture("override_builtins.js"), { host: overrideHost });
  assert.deepEqual(run.calls.map((c) => [c.id, c.service, c.path, c.args]), [
    [1, "svc", ["echo"], [{ a: 1 }, [2, "three"]]],
    [2, "svc", ["echo"], [2]],
    [3, "svc", ["echo"], [3]],
    [4, "svc", ["fail"], []],
  ]);
  assert.deepEqual(resultOf(run), {
    one: { id: 1, service: "svc", path: ["echo"], args: [{ a: 1 }, [2, "three"]] },
    two: { id: 2, service: "svc", path: ["echo"], args: [2] },
    three: { id: 3, service: "svc", path: ["echo"], args: [3] },
    failed: { name: "ServiceError", message: "it failed", code: "E_SVC" },
    usedThen: true,
  });
  assert.deepEqual(run.logs.map((l) => l.message), ['still logging {"a":1}']);
});

Deno.test({
  name: "a Promise.prototype.then that never calls back does not stop the run from completing",
  // BUG (sandbox, prelude.ts start()): the then-callback returns the entry function's
  // promise, so the prelude's own promise is resolved with it, and resolving with a
  // thenable calls its `then` property: the task's override. A `then` that never calls back
  // leaves the run { kind: "parked", calls: [] } forever although the task returned.
  fn: async () => {
    using vm = await newVm();
    const run = drive(vm, fixture("noop_promise_then.js"), { host: () => ok(7) });
    assert.deepEqual(resultOf(run), { value: 7 });
  },
});

Deno.test({
  name:
    "setters on Array.prototype indices do not change the calls, parked list or logs the host sees",
  // BUG (sandbox, prelude.ts): the prelude fills fresh arrays by index assignment
  // (`next[path.length] = key` in toolProxy, `ids[ids.length] = id` in status(),
  // `logs[logs.length] = ...` in log(), `args[i] = arguments[i]` in console), and an
  // assignment to an index the array does not have runs a setter on Array.prototype.
  // Result: tools.svc.a.b() arrives with path [], the log is lost, and a VM parked on
  // call 1 reports { kind: "parked", calls: [] }, which the engine cannot suspend.
  fn: async () => {
    using vm = await newVm();
    const run = drive(vm, fixture("array_index_setters.js"), { host: () => undefined });
    assert.deepEqual(run.calls, [{ id: 1, service: "svc", path: ["a", "b"], args: ["x"] }]);
    assert.deepEqual(run.state, { kind: "parked", calls: [1] });
    assert.deepEqual(run.logs.map((l) => l.message), ["before the call"]);
    assert.equal(vm.settle(1, ok("y")), true);
    assert.equal(resultOf({ ...run, state: vm.run() }), "y");
  },
});
