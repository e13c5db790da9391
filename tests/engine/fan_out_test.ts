/**
 * Fan-out limits: children per run and runs per tree (quickjs.start_child counts both in
 * the transaction that adds a child), so a task that starts copies of itself ends with
 * named codes instead of filling the database.
 */
import assert from "node:assert/strict";
import { dbTests, type TestDb } from "../support/db.ts";
import { type Harness, harness, runToEnd } from "../support/engine_harness.ts";
import { startWith, taskName } from "../support/engine_scenarios.ts";

const { test } = dbTests("engine_fan_out");

async function limit(db: TestDb, key: string, value: number | null): Promise<void> {
  if (value === null) await db.query("delete from quickjs.settings where key = $1", [key]);
  else {
    await db.query(
      "insert into quickjs.settings (key, value) values ($1, $2) " +
        "on conflict (key) do update set value = excluded.value",
      [key, String(value)],
    );
  }
}

/** Runs whatever is due until nothing is, jumping the clock to each wake-up. */
async function drain(h: Harness): Promise<void> {
  for (;;) {
    const results = await h.engine.claimAndRun({ limit: 8 });
    if (results.length > 0) continue;
    const next = await h.store.nextWakeAt(h.clock.now());
    if (!next) return;
    h.clock.jumpTo(next);
  }
}

const FORK_BOMB = `export default async function (n, ctx) {
  await Promise.all([0, 1, 2, 3, 4, 5, 6, 7].map((i) => tools.tasks.execute(ctx.task, i)));
  return "unreachable";
}`;

test("a fork bomb (8 children of itself per run) ends with DESCENDANT_LIMIT_EXCEEDED at the tree's limit", async (db) => {
  await limit(db, "max_descendants_per_root", 60);
  try {
    const h = harness(db.store);
    const name = taskName("fork_bomb");
    const id = await startWith(h, FORK_BOMB, 0, { name });
    const run = await runToEnd(h, id);
    assert.equal(run.status, "failed");
    assert.equal(run.error?.code, "DESCENDANT_LIMIT_EXCEEDED");
    await drain(h);
    const [row] = await db.query<{ n: number; open: number }>(
      "select count(*)::int as n, count(*) filter (where finished_at is null)::int as open " +
        "from quickjs.runs where task_name = $1",
      [name],
    );
    assert.deepEqual({ ...row }, { n: 61, open: 0 }, "the top run and 60 descendants, all ended");
  } finally {
    await limit(db, "max_descendants_per_root", null);
  }
});

test("a run that starts more children than max_children_per_run gets CHILD_LIMIT_EXCEEDED, which it can catch", async (db) => {
  await limit(db, "max_children_per_run", 3);
  try {
    const h = harness(db.store);
    const name = taskName("wide");
    const id = await startWith(
      h,
      `export default async function (n, ctx) {
        if (n === "leaf") return 1;
        const got = [];
        for (let i = 0; i < 5; i++) {
          try {
            got.push(await tools.tasks.execute(ctx.task, "leaf"));
          } catch (e) {
            got.push(e.code + ": " + e.message);
          }
        }
        return got;
      }`,
      "top",
      { name },
    );
    const run = await runToEnd(h, id);
    assert.equal(run.status, "completed");
    const stop = "CHILD_LIMIT_EXCEEDED: a run may start 3 child runs (max_children_per_run)";
    assert.deepEqual(run.result, [1, 1, 1, stop, stop]);
    const [row] = await db.query<{ n: number }>(
      "select count(*)::int as n from quickjs.runs where task_name = $1",
      [name],
    );
    assert.equal(row!.n, 4);
  } finally {
    await limit(db, "max_children_per_run", null);
  }
});

test(
  "the fork bomb under the default limits makes 1,001 runs: the top run and 1,000 descendants",
  async (db) => {
    const h = harness(db.store);
    const name = taskName("fork_bomb_default");
    const id = await startWith(h, FORK_BOMB, 0, { name });
    const run = await runToEnd(h, id, { maxInvocations: 20_000 });
    assert.equal(run.error?.code, "DESCENDANT_LIMIT_EXCEEDED");
    await drain(h);
    const [row] = await db.query<{ n: number }>(
      "select count(*)::int as n from quickjs.runs where task_name = $1",
      [name],
    );
    assert.equal(row!.n, 1001);
  },
  {
    ignore: Deno.env.get("QUICKJS_RELIABILITY") !== "1" &&
      "about 2,500 invocations: deno task test:reliability runs it",
  },
);
