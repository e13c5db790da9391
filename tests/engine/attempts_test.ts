/**
 * Attempts and invocations: ctx.attempt counts restarts of a run by its task's @retry,
 * ctx.invocation (and runs.invocations, the log lines) every claim; a run whose code throws
 * is started again from its input, its earlier attempts kept and never replayed, also when a
 * worker crashes between or during attempts.
 */
import assert from "node:assert/strict";
import { dbTests } from "../support/db.ts";
import { harness, runToEnd } from "../support/engine_harness.ts";
import {
  deferred,
  invokeAndCrash,
  invokeOnce,
  logsOf,
  never,
  taskName,
} from "../support/engine_scenarios.ts";
import type { Harness } from "../support/engine_harness.ts";
import type { Json, TaskRetry } from "../../supabase/functions/_shared/quickjs/mod.ts";
import { parseRetryTag } from "../../supabase/functions/_shared/quickjs/dev/task_files.ts";

const { test } = dbTests("engine_attempts");

async function start(h: Harness, code: string, retry: TaskRetry | null, input: Json = null) {
  const name = taskName("att");
  await h.store.publishTask({ name, code, retry });
  return (await h.store.enqueueRun({ task: name, input, now: h.clock.now() })).id;
}

test("ctx.invocation counts the invocations of a run that sleeps while ctx.attempt stays 1", async (db) => {
  const h = harness(db.store);
  const id = await start(
    h,
    `export default async function (input, ctx) {
      const seen = [[ctx.attempt, ctx.invocation]];
      await sleep("1 hour");
      seen.push([ctx.attempt, ctx.invocation]);
      await sleep("1 hour");
      seen.push([ctx.attempt, ctx.invocation]);
      return { seen, frozen: Object.isFrozen(ctx), keys: Object.keys(ctx) };
    }`,
    null,
  );
  const run = await runToEnd(h, id);
  assert.equal(run.status, "completed", JSON.stringify(run.error));
  assert.deepEqual(run.result, {
    seen: [[1, 1], [1, 2], [1, 3]],
    frozen: true,
    keys: ["runId", "task", "attempt", "invocation"],
  });
  assert.equal(run.attempts, 1);
  assert.equal(run.invocations, 3);
  const system = logsOf(run, "system");
  assert.ok(system.includes("restored the VM (invocation 2)"), system.join("\n"));
  assert.ok(system.includes("restored the VM (invocation 3)"));
  assert.ok(!system.some((m) => /attempt 2/.test(m)));
  assert.deepEqual([...new Set(run.logs!.map((l) => l.attempt))], [1]);
  assert.ok(run.logs!.some((l) => l.invocation === 3));
});

test("@retry starts a run whose code throws again from its input, after the backoff, keeping each attempt's error and journal", async (db) => {
  const h = harness(db.store);
  const id = await start(
    h,
    `export default async function (input, ctx) {
      console.log("attempt", ctx.attempt);
      await tools.kv.set("attempt-" + input.key, ctx.attempt);
      if (ctx.attempt < 3) throw new Error("flaky " + ctx.attempt);
      return { attempt: ctx.attempt, invocation: ctx.invocation, input };
    }`,
    { attempts: 3, backoffMs: 10_000, multiplier: 2 },
    { key: taskName("k") },
  );
  const t0 = h.clock.now().getTime();
  const first = await invokeOnce(h, id);
  assert.equal(first.status, "queued", "failed, and queued again for attempt 2");
  const queued = (await h.store.getRun(id))!;
  assert.equal(queued.attempts, 2);
  assert.equal(queued.error?.message, "flaky 1", "the last attempt's error stays visible");
  assert.equal((await h.engine.claimAndRun({ runId: id })).length, 0, "not before the backoff");
  const run = await runToEnd(h, id);
  assert.equal(run.status, "completed", JSON.stringify(run.error));
  assert.equal(run.error, undefined);
  assert.deepEqual((run.result as { attempt: number }).attempt, 3);
  assert.equal(run.attempts, 3);
  assert.equal(run.invocations, 3);
  assert.ok(h.clock.now().getTime() - t0 >= 30_000, "10 s, then 20 s of backoff");
  assert.deepEqual(run.previousAttempts?.map((a) => [a.attempt, a.error.message, a.calls]), [
    [1, "flaky 1", 1],
    [2, "flaky 2", 1],
  ]);
  // each attempt's own start: the next one starts after the backoff, not at the run's start
  const [a1, a2] = run.previousAttempts!;
  const ms = (iso?: string) => Date.parse(iso!);
  assert.ok(ms(a2!.startedAt) >= ms(a1!.endedAt) + 10_000, JSON.stringify(run.previousAttempts));
  assert.ok(ms(run.startedAt) >= ms(a2!.endedAt) + 20_000, `${run.startedAt} (attempt 3)`);
  // the journal is the last attempt's; the earlier ones are kept, not replayed
  const calls = await h.store.listCalls(id);
  assert.deepEqual(calls.map((c) => [c.seq, c.args[1], c.idempotencyKey]), [[1, 3, `${id}:1:a3`]]);
  const kept = await db.query<{ attempt: number; calls: { args: Json[] }[] }>(
    "select attempt, calls from quickjs.run_attempts where run_id = $1 order by attempt",
    [id],
  );
  assert.deepEqual(kept.map((k) => [k.attempt, k.calls[0]!.args[1]]), [[1, 1], [2, 2]]);
  const system = logsOf(run, "system");
  assert.ok(system.some((m) => /^attempt 1 failed \(TASK_ERROR\); attempt 2 of 3 at /.test(m)));
  assert.deepEqual([...new Set(run.logs!.map((l) => l.attempt))], [1, 2, 3]);
});

test("a run that fails on every attempt fails once its @retry attempts are spent", async (db) => {
  const h = harness(db.store);
  const id = await start(
    h,
    `export default async function (input, ctx) { throw new Error("always " + ctx.attempt); }`,
    { attempts: 2 },
  );
  const run = await runToEnd(h, id);
  assert.equal(run.status, "failed");
  assert.equal(run.error?.message, "always 2");
  assert.equal(run.attempts, 2);
  assert.equal(run.previousAttempts?.length, 1);
});

test("a syntax error is not retried: the code would fail the same way", async (db) => {
  const h = harness(db.store);
  const id = await start(h, `export default async function ( {`, { attempts: 3 });
  const run = await runToEnd(h, id);
  assert.equal(run.status, "failed");
  assert.equal(run.error?.code, "TASK_SYNTAX");
  assert.equal(run.attempts, 1);
});

test("a crash during a retried attempt continues that attempt: it is not counted twice", async (db) => {
  const entered = deferred();
  let calls = 0;
  const h = harness(db.store, {
    custom: {
      hang: () => {
        calls++;
        if (calls === 1) {
          entered.resolve();
          return never();
        }
        return "ok";
      },
    },
  });
  const id = await start(
    h,
    `export default async function (input, ctx) {
      if (ctx.attempt === 1) throw new Error("first");
      return { attempt: ctx.attempt, value: await tools.hang.on() };
    }`,
    { attempts: 3 },
  );
  assert.equal((await invokeOnce(h, id)).status, "queued");
  const crash = new AbortController();
  entered.promise.then(() => crash.abort());
  await invokeAndCrash(h, id, crash);
  const run = await runToEnd(h, id);
  assert.equal(run.status, "completed", JSON.stringify(run.error));
  assert.deepEqual(run.result, { attempt: 2, value: "ok" });
  assert.equal(run.attempts, 2, "the crash was an invocation lost, not an attempt");
  assert.equal(run.invocations, 3);
  assert.equal(run.previousAttempts?.length, 1);
});

Deno.test("@retry is parsed with its backoff as a duration and refused when out of range", () => {
  assert.deepEqual(parseRetryTag("t.js", '{"attempts": 3, "backoff": "10s"}'), {
    attempts: 3,
    backoffMs: 10_000,
  });
  assert.deepEqual(parseRetryTag("t.js", '{"attempts": 2, "backoff": 500, "multiplier": 3}'), {
    attempts: 2,
    backoffMs: 500,
    multiplier: 3,
  });
  assert.throws(() => parseRetryTag("t.js", '{"attempts": 0}'), /attempts must be/);
  assert.throws(() => parseRetryTag("t.js", '{"attempts": 2, "backof": "1s"}'), /unknown field/);
  assert.throws(() => parseRetryTag("t.js", '{"attempts": 2, "backoff": "2 days"}'), /a day/);
  assert.throws(() => parseRetryTag("t.js", "3"), /not an object/);
});
