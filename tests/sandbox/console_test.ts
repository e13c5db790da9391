/** The task's console: every level is captured with its time, and taken once. */
import assert from "node:assert/strict";
import { drive, fixture, newVm, resultOf } from "./drive.ts";

Deno.test("console.log/info/warn/error/debug are captured with level and time", async () => {
  using vm = await newVm();
  const before = Date.now();
  const run = drive(vm, fixture("console_levels.js"));
  const after = Date.now();
  assert.equal(resultOf(run), "logged");
  assert.deepEqual(run.logs.map((l) => l.level), ["log", "info", "warn", "error", "debug"]);
  const messages = run.logs.map((l) => l.message);
  assert.equal(messages[0], 'log 1 {"a":[1,2]}');
  assert.equal(messages[1], "info");
  assert.equal(messages[2], "warn null undefined");
  assert.match(messages[3]!, /^TypeError: bad thing/);
  assert.equal(messages[4], "debug true");
  for (const { at } of run.logs) {
    // The VM's clock is the host's: the time falls inside the run (1 s of slack for rounding).
    assert.ok(at >= before - 1000 && at <= after + 1000, `log time ${at} outside the run`);
  }
  assert.deepEqual(vm.takeLogs(), [], "logs are handed out once");
});

Deno.test("logs made before a host call are not lost when the call settles", async () => {
  using vm = await newVm();
  const run = drive(
    vm,
    `export default async function () {
      console.log("one");
      await tools.svc.get();
      console.log("two");
      return "ok";
    }`,
  );
  assert.deepEqual(run.logs.map((l) => l.message), ["one", "two"]);
});
