/**
 * Hostile tasks against the bridge and the prelude's own limits: a huge host-call argument
 * (argsBytes), a burst of large calls in one slice (hostBytes), a microtask flood, and a
 * 20 MB console.log. Each ends with its named code, and fast.
 */
import assert from "node:assert/strict";
import { drive, errorOf, newVm, resultOf } from "./drive.ts";

const MiB = 1024 * 1024;

Deno.test("a 16 MiB tool argument is refused ARGS_TOO_LARGE at the call, and the task can catch it", async () => {
  using vm = await newVm();
  const run = drive(
    vm,
    `export default async function () {
      try {
        await tools.a.b("x".repeat(16 * 1024 * 1024));
        return "sent";
      } catch (e) {
        return [e.code, e.name, e.message];
      }
    }`,
  );
  const [code, name, message] = resultOf(run) as string[];
  assert.equal(code, "ARGS_TOO_LARGE");
  assert.equal(name, "LimitError");
  assert.match(message!, /tools\.a\.b .*1048576 bytes/);
  assert.equal(run.calls.length, 0, "the host never saw the call");
});

Deno.test("an uncaught ARGS_TOO_LARGE fails the run with that code", async () => {
  using vm = await newVm({ argsBytes: 1024 });
  const run = drive(vm, `export default async function () { await tools.a.b("x".repeat(2000)); }`);
  assert.equal(errorOf(run).code, "ARGS_TOO_LARGE");
});

Deno.test("a burst of large calls in one slice past hostBytes is refused HOST_BYTES_EXCEEDED", async () => {
  using vm = await newVm({ hostBytes: 1 * MiB, argsBytes: 512 * 1024 });
  const run = drive(
    vm,
    `export default async function () {
      const big = "x".repeat(400 * 1024);
      const calls = [tools.a.b(big), tools.a.b(big), tools.a.b(big)];
      const settled = await Promise.allSettled(calls);
      return settled.map((s) => s.status === "fulfilled" ? "ok" : s.reason.code);
    }`,
    { host: () => ({ ok: true }) },
  );
  assert.deepEqual(resultOf(run), ["ok", "ok", "HOST_BYTES_EXCEEDED"]);
  assert.equal(run.calls.length, 2);
});

Deno.test("the VM reports hostBytesSpent past half of hostBytes, so the engine can suspend", async () => {
  using vm = await newVm({ hostBytes: 1 * MiB });
  drive(
    vm,
    `export default async function () { await tools.a.b("x".repeat(600 * 1024)); }`,
    { host: () => ({ ok: true }) },
  );
  assert.ok(vm.hostBytes >= 600 * 1024);
  assert.equal(vm.hostBytesSpent, true);
});

Deno.test("a microtask flood fails SANDBOX_TIMEOUT with a message, within the slice", async () => {
  using vm = await newVm({ sliceMs: 200 });
  const start = performance.now();
  const run = drive(
    vm,
    `export default async function () {
      const flood = () => Promise.resolve().then(flood);
      flood();
      await new Promise(() => {});
    }`,
  );
  const overshootMs = performance.now() - start - 200;
  const error = errorOf(run);
  assert.equal(error.code, "SANDBOX_TIMEOUT");
  assert.match(error.message, /more than 200 ms without awaiting/);
  assert.ok(overshootMs < 1000, `ran ${overshootMs.toFixed(0)} ms past the slice`);
});

Deno.test("console.log of 20 MB fails LOG_TOO_LARGE fast", async () => {
  using vm = await newVm({ sliceMs: 200 });
  const start = performance.now();
  const run = drive(vm, `export default function () { console.log("x".repeat(20e6)); }`);
  const ms = performance.now() - start;
  assert.equal(errorOf(run).code, "LOG_TOO_LARGE");
  assert.ok(ms < 1000, `took ${ms.toFixed(0)} ms`);
  assert.ok(run.logs.every((l) => l.message.length < 1000), "the 20 MB message was not kept");
});
