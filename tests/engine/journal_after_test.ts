/**
 * One write per in-process call (CustomTool.journalAfter): the call runs before anything is
 * journaled and is recorded with its outcome in one fenced write (record_settled_call). A
 * settled call is still never executed twice; one cut off by a crash runs again with the
 * same idempotency key; a run that suspends while one runs, or resumes later, keeps both.
 */
import assert from "node:assert/strict";
import { dbTests } from "../support/db.ts";
import { harness, runToEnd, startTask } from "../support/engine_harness.ts";
import { callOf, invokeAndCrash, never } from "../support/engine_scenarios.ts";
import {
  type CustomTool,
  type Json,
  type ToolCallContext,
} from "../../supabase/functions/_shared/quickjs/mod.ts";

const { test } = dbTests("engine_journal_after");

const THREE_STEPS = `export default async function () {
  const out = [];
  for (let i = 1; i <= 3; i++) out.push(await tools.step.run(i));
  return out;
}`;

/** A journalAfter tool that counts its calls; `crashOn` aborts `crash` and hangs, once. */
function steps(crash?: AbortController, crashOn?: number) {
  const seen: { arg: Json; key: string; attempt: number }[] = [];
  const tool: CustomTool = (_method: string[], args: Json[], context: ToolCallContext) => {
    seen.push({ arg: args[0]!, key: context.idempotencyKey, attempt: context.attempt });
    if (crash && args[0] === crashOn && !crash.signal.aborted) {
      crash.abort(); // the process dies while this call is in flight
      return never();
    }
    return (args[0] as number) * 10;
  };
  tool.journalAfter = true;
  return { tool, seen };
}

/** Counts the store operations the engine sends, by name. */
function countOps(store: { driver: { call: (...a: never[]) => unknown } }) {
  const counts: Record<string, number> = {};
  const driver = store.driver as unknown as { call: (op: string, args: unknown) => unknown };
  const call = driver.call.bind(driver);
  driver.call = (op: string, args: unknown) => {
    counts[op] = (counts[op] ?? 0) + 1;
    return call(op, args);
  };
  return { counts, restore: () => (driver.call = call) };
}

test("a journalAfter call is journaled once, after it ran, settled with its key run id:seq", async (db) => {
  const fx = steps();
  const h = harness(db.store, { custom: { step: fx.tool } });
  const id = await startTask(h, THREE_STEPS);
  const ops = countOps(db.store as never);
  let run;
  try {
    run = await runToEnd(h, id);
  } finally {
    ops.restore();
  }
  assert.equal(run.status, "completed");
  assert.deepEqual(run.result, [10, 20, 30]);
  assert.equal(ops.counts.record_settled_call, 3, "one write per call");
  assert.equal(ops.counts.record_call ?? 0, 0, "nothing written before a call");
  assert.equal(ops.counts.settle_call ?? 0, 0);
  for (const seq of [1, 2, 3]) {
    const call = await callOf(h, id, seq);
    assert.equal(call.status, "succeeded");
    assert.equal(call.attempts, 1);
    assert.equal(call.idempotencyKey, `${id}:${seq}`);
    assert.equal(call.mode, "inline");
    assert.deepEqual(call.result, seq * 10);
  }
  assert.deepEqual(fx.seen.map((s) => s.key), [1, 2, 3].map((seq) => `${id}:${seq}`));
});

test("after a crash a settled journalAfter call is delivered from the journal; the one cut off runs again with the same key", async (db) => {
  const crash = new AbortController();
  const fx = steps(crash, 2);
  const h = harness(db.store, { custom: { step: fx.tool } });
  const id = await startTask(h, THREE_STEPS);
  await invokeAndCrash(h, id, crash);
  assert.equal((await callOf(h, id, 1)).status, "succeeded", "call 1 was journaled");
  assert.equal(
    (await db.store.listCalls(id)).some((c) => c.seq === 2),
    false,
    "the call in flight left no entry",
  );
  const run = await runToEnd(h, id);
  assert.equal(run.status, "completed");
  assert.deepEqual(run.result, [10, 20, 30]);
  assert.deepEqual(fx.seen.map((s) => s.arg), [1, 2, 2, 3], "call 1 ran once, call 2 twice");
  assert.equal(fx.seen[1]!.key, fx.seen[2]!.key, "the same idempotency key both times");
  assert.equal(fx.seen[2]!.key, `${id}:2`);
});

test("journalAfter calls on either side of a durable sleep: the restored run journals its later calls once each", async (db) => {
  const fx = steps();
  const h = harness(db.store, { custom: { step: fx.tool }, inlineSleepMaxMs: 0 });
  const id = await startTask(
    h,
    `export default async function () {
      const a = await tools.step.run(1);
      await sleep(60_000);
      const b = await tools.step.run(2);
      return [a, b];
    }`,
  );
  const run = await runToEnd(h, id);
  assert.equal(run.status, "completed");
  assert.deepEqual(run.result, [10, 20]);
  assert.ok(h.invocations.some((i) => i.restored), "the run was restored after its sleep");
  assert.deepEqual(fx.seen.map((s) => s.arg), [1, 2], "each call ran once");
  assert.equal((await callOf(h, id, 1)).status, "succeeded");
  assert.equal((await callOf(h, id, 3)).status, "succeeded");
  assert.equal((await callOf(h, id, 3)).idempotencyKey, `${id}:3`);
});

test("a run that suspends while a journalAfter call runs records it as started, and runs it again on resume", async (db) => {
  let release: (() => void) | undefined;
  const seen: Json[] = [];
  const tool: CustomTool = (_m, args) => {
    seen.push(args[0]!);
    if (seen.length === 1) return new Promise((resolve) => (release = () => resolve(-1)));
    return args[0]!;
  };
  tool.journalAfter = true;
  const h = harness(db.store, { custom: { step: tool } });
  const id = await startTask(
    h,
    `export default async function () { return await tools.step.run(7); }`,
  );
  const handOver = new AbortController();
  const first = h.engine.claimAndRun({ runId: id, yield: handOver.signal });
  while (!release) await new Promise((r) => setTimeout(r, 5));
  handOver.abort(); // the worker stops: the run is handed over while the call runs
  const [result] = await first;
  release();
  assert.equal(result!.status, "queued", "handed over, to continue at once");
  const started = await callOf(h, id, 1);
  assert.equal(started.status, "started", "the call in flight has its entry");
  const run = await runToEnd(h, id);
  assert.equal(run.status, "completed");
  assert.equal(run.result, 7);
  assert.deepEqual(seen, [7, 7]);
  assert.equal((await callOf(h, id, 1)).attempts, 2);
});
