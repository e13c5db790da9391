/**
 * The origin system's "stuck in running", through another door: a string Postgres cannot
 * hold (U+0000, a lone surrogate) made the store fail mid-transition and left the run
 * "running" with nothing to wake it. Now such a value is refused at the call (the task can
 * catch VALUE_NOT_STORABLE) or fails the run with that code; log lines and error messages
 * are stored with the character escaped. Every path: kv, call args, child input, tool
 * results, the result, the error, the logs.
 */
import assert from "node:assert/strict";
import { dbTests } from "../support/db.ts";
import { harness, runTaskToEnd } from "../support/engine_harness.ts";
import { type SqlDriver, Store } from "../../supabase/functions/_shared/quickjs/mod.ts";

const { test } = dbTests("engine_unstorable_values");

const NUL = '"a\\u0000b"';
const LONE = '"x\\ud800y"';

/** A task that awaits `body` and returns what it caught. */
const catching = (body: string) =>
  `export default async function () {
    try {
      await ${body};
      return { caught: null };
    } catch (e) {
      return { caught: e.code, name: e.name, message: e.message };
    }
  }`;

for (const [label, value] of [["U+0000", NUL], ["a lone surrogate", LONE]] as const) {
  test(`a kv value holding ${label} is refused at the call with VALUE_NOT_STORABLE, which the task catches (stuck in running)`, async (db) => {
    const h = harness(db.store);
    const run = await runTaskToEnd(h, catching(`tools.kv.set("k", { v: ${value} })`));
    assert.equal(run.status, "completed");
    assert.equal((run.result as { caught: string }).caught, "VALUE_NOT_STORABLE");
    assert.match((run.result as { message: string }).message, /\$\[1\]\.v/);
  });

  test(`a child's input holding ${label} is refused at the call (stuck in running)`, async (db) => {
    const h = harness(db.store);
    await db.store.publishTask({ name: "unstorable_child", code: "export default (x) => x" });
    const run = await runTaskToEnd(
      h,
      catching(`tools.tasks.execute("unstorable_child", [${value}])`),
    );
    assert.equal(run.status, "completed");
    assert.equal((run.result as { caught: string }).caught, "VALUE_NOT_STORABLE");
  });

  test(`a result holding ${label} fails the run with VALUE_NOT_STORABLE (stuck in running)`, async (db) => {
    const h = harness(db.store);
    const run = await runTaskToEnd(h, `export default async () => ({ text: ${value} })`);
    assert.equal(run.status, "failed");
    assert.equal(run.error?.code, "VALUE_NOT_STORABLE");
    assert.match(run.error?.message ?? "", /result/);
  });

  test(`a tool result holding ${label} rejects the await with VALUE_NOT_STORABLE (stuck in running)`, async (db) => {
    const h = harness(db.store, { custom: { echo: () => JSON.parse(value) } });
    const run = await runTaskToEnd(h, catching("tools.echo.say()"));
    assert.equal(run.status, "completed");
    assert.equal((run.result as { caught: string }).caught, "VALUE_NOT_STORABLE");
  });

  test(`an error message and a log line holding ${label} are stored escaped; the run fails with its own code (stuck in running)`, async (db) => {
    const h = harness(db.store);
    const run = await runTaskToEnd(
      h,
      `export default async () => { console.log(${value}); await sleep(1); throw new Error(${value}); }`,
    );
    assert.equal(run.status, "failed");
    assert.equal(run.error?.code, "TASK_ERROR");
    const logged = (await db.store.getRun(run.id))?.logs?.find((l) => l.level === "log");
    assert.ok(logged, "the log line was stored");
    for (const text of [run.error?.message ?? "", logged.message]) {
      assert.ok(!text.includes("\0") && text.isWellFormed(), JSON.stringify(text));
    }
  });
}

test("a data error from the database at any step fails the run with VALUE_NOT_STORABLE, never leaving it running", async (db) => {
  // a driver that refuses the suspension the way Postgres refuses a bad jsonb value
  const refusing: SqlDriver = {
    ...db.driver,
    call: (op, args) =>
      op === "suspend_run"
        ? Promise.reject(
          Object.assign(new Error("unsupported Unicode escape sequence"), { code: "22P05" }),
        )
        : db.driver.call(op, args),
  };
  const h = harness(new Store(refusing));
  const run = await runTaskToEnd(
    h,
    `export default async () => { await sleep("1 hour"); return 1; }`,
  );
  assert.equal(run.status, "failed");
  assert.equal(run.error?.code, "VALUE_NOT_STORABLE");
  assert.match(run.error?.message ?? "", /unsupported Unicode escape sequence/);
});
