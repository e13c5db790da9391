/**
 * The heart of the product: the same program gives the same result whether its awaits
 * stay in one process, cross a snapshot each (--durable-all), or each restore happens in
 * a new process (--restore-in-subprocess). Runs the real CLI as real processes.
 */
import assert from "node:assert/strict";
import { dbTests } from "../support/db.ts";
import { type CliResult, runTask } from "../support/cli.ts";

const { test } = dbTests("durable_equivalence");
const FIXTURES = "tests/fixtures/durable";

function outcome(r: CliResult) {
  assert.ok(r.json, `no JSON summary; exit ${r.code}\n${r.stderr}`);
  return { status: r.json.status, result: r.json.result, error: r.json.error, logs: r.json.logs };
}

async function compareModes(
  db: { url?: string },
  file: string,
  input: unknown,
  subprocess: boolean,
) {
  const plain = await runTask(`${FIXTURES}/${file}`, { input, db: db.url });
  assert.equal(plain.code, 0, plain.stderr);
  const durable = await runTask(`${FIXTURES}/${file}`, {
    input,
    db: db.url,
    flags: ["--durable-all"],
  });
  assert.equal(durable.code, 0, durable.stderr);
  assert.deepEqual(outcome(durable), outcome(plain));
  if (subprocess) {
    const separate = await runTask(`${FIXTURES}/${file}`, {
      input,
      db: db.url,
      flags: ["--durable-all", "--restore-in-subprocess"],
    });
    assert.equal(separate.code, 0, separate.stderr);
    assert.deepEqual(outcome(separate), outcome(plain));
  }
  return { plain: plain.json!, durable: durable.json! };
}

test("closures, private fields, collections, generators and try/finally survive every await as a snapshot, in process and across processes", async (db) => {
  const { plain, durable } = await compareModes(db, "features.js", { n: 4 }, true);
  assert.equal(plain.status, "completed");
  const result = plain.result as Record<string, unknown>;
  assert.equal(result.sum, 3 + 13 + 33); // i = 2 throws
  assert.deepEqual(result.collected, [0, 1, 2]);
  assert.equal(result.weak, "weak-ok");
  assert.equal(result.randomOk, true);
  assert.deepEqual((result.log as string[]).filter((l) => l.startsWith("caught")), [
    "caught boom 2 / RangeError",
  ]);
  assert.ok((durable.suspensions as number) > 10, `suspensions: ${durable.suspensions}`);
});

test("concurrent sleeps wake in deadline order, like timers, whether in process or durable", async (db) => {
  const { plain } = await compareModes(db, "sleep_order.js", null, false);
  assert.deepEqual(plain.result, ["10ms", "30ms", "1h", "2h", "3h"]);
});

test("a child run's result and a child run's error arrive in the parent's await", async (db) => {
  const { plain } = await compareModes(db, "parent.js", { n: 4 }, true);
  assert.deepEqual(plain.result, {
    doubled: 8,
    failure: { name: "Error", code: "GAVE_UP", message: "child gave up: no reason" },
    pair: [2, 4],
    missing: "TASK_NOT_FOUND",
  });
});

test("errors keep their names, codes, causes and finally blocks across durable awaits", async (db) => {
  const { plain } = await compareModes(db, "errors.js", null, false);
  assert.deepEqual(plain.result, [
    ["ToolError", "TOOL_NOT_FOUND"],
    ["ToolError", "BAD_ARGUMENTS"],
    "inner finally",
    ["outer", "TypeError", "inner failed"],
    ["fulfilled", "rejected", "fulfilled"],
  ]);
});

test("--durable-all makes every await of a host call cross a snapshot, due sleeps included", async (db) => {
  const { plain, durable } = await compareModes(db, "forty_awaits.js", null, false);
  assert.deepEqual(plain.result, { steps: 40 });
  // one suspension per await: none is delivered in the process that made the call
  assert.equal(durable.suspensions, 40);
});
