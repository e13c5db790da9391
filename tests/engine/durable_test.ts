/**
 * Sleep and resume through the real engine and database: the VM is saved whole and
 * restored; the task's awaits simply return. Named after what the system this replaces
 * got wrong: runs stuck in "running", VM state not really saved, sleep/resume unfinished.
 */
import assert from "node:assert/strict";
import { dbTests } from "../support/db.ts";
import { harness, runTaskToEnd, runToEnd, startTask } from "../support/engine_harness.ts";
import {
  type Json,
  readSnapshot,
  Store,
  supabaseDriver,
} from "../../supabase/functions/_shared/quickjs/mod.ts";
import { postgrestDouble } from "../support/postgrest.ts";

const { test } = dbTests("engine_durable");

test("sleep/resume finishes: a run that sleeps 2 hours completes once its wake time passes", async (db) => {
  const h = harness(db.store);
  const started = h.clock.now().getTime();
  const run = await runTaskToEnd(
    h,
    `export default async function () {
      const before = Date.now();
      await sleep("2 hours");
      return { slept: Date.now() - before >= 2 * 3600 * 1000 };
    }`,
  );
  assert.equal(run.status, "completed");
  assert.deepEqual(run.result, { slept: true });
  assert.equal(run.suspensions, 1);
  assert.ok(h.clock.now().getTime() - started >= 2 * 3600 * 1000);
  assert.deepEqual(h.invocations.map((i) => i.status), ["suspended", "completed"]);
  assert.equal(h.invocations[1]!.restored, true);
});

test("a run is never left running: every invocation ends completed, failed or suspended", async (db) => {
  const h = harness(db.store);
  const id = await startTask(
    h,
    `export default async function () {
      await tools.kv.set("x", 1);
      await sleep("1 minute");
      await checkpoint();
      throw new Error("the end");
    }`,
  );
  for (let i = 0; i < 10; i++) {
    const results = await h.engine.claimAndRun({ limit: 1 });
    const run = (await db.store.getRun(id))!;
    assert.notEqual(run.status, "running", `after invocation ${i}`);
    if (run.status === "failed") {
      assert.equal(run.error?.message, "the end");
      return;
    }
    if (results.length === 0) h.clock.jumpTo((await db.store.nextWakeAt(h.clock.now()))!);
  }
  assert.fail("the run did not end");
});

test("the VM state is really saved: code before a durable await runs once, not again on resume", async (db) => {
  let hits = 0;
  const h = harness(db.store, { custom: { effects: () => ++hits } });
  const run = await runTaskToEnd(
    h,
    `export default async function () {
      const first = await tools.effects.hit();
      console.log("before the sleep");
      await sleep("3 hours");
      const second = await tools.effects.hit();
      return [first, second];
    }`,
  );
  assert.deepEqual(run.result, [1, 2]);
  assert.equal(hits, 2);
  assert.deepEqual(
    run.logs?.filter((l) => l.level === "log").map((l) => l.message),
    ["before the sleep"],
  );
});

test("results go to the await that made the call, whatever order they arrive in after a restore", async (db) => {
  // far apart: the calls start one journal write after another, which a loaded machine slows
  const delays: Record<string, number> = { a: 900, b: 5, c: 400 };
  const h = harness(db.store, {
    durableAll: true,
    custom: {
      echo: async (_path, [label]) => {
        await new Promise((r) => setTimeout(r, delays[label as string]));
        return `${label}!`;
      },
    },
  });
  const run = await runTaskToEnd(
    h,
    `export default async function () {
      const order = [];
      const call = (l) => tools.echo.say(l).then((v) => (order.push(l), v));
      const [a, b, c] = await Promise.all([call("a"), call("b"), call("c")]);
      return { a, b, c, order };
    }`,
  );
  assert.equal(run.status, "completed");
  const result = run.result as { a: string; b: string; c: string; order: string[] };
  assert.deepEqual([result.a, result.b, result.c], ["a!", "b!", "c!"]);
  assert.deepEqual(result.order, ["b", "c", "a"], "delivered in the order the calls settled");
  assert.ok(run.suspensions >= 1);
});

test("short sleeps stay in the process and long ones suspend, at a configurable threshold", async (db) => {
  const code =
    `export default async function () { await sleep(50); await sleep(400); return "ok"; }`;
  const low = harness(db.store, { inlineSleepMaxMs: 100 });
  const a = await runTaskToEnd(low, code);
  assert.equal(a.suspensions, 1, "400 ms is over the 100 ms threshold");
  const high = harness(db.store, { inlineSleepMaxMs: 1000 });
  const b = await runTaskToEnd(high, code);
  assert.equal(b.suspensions, 0, "both under 1 s: no snapshot");
  assert.equal(b.result, "ok");
});

test("sleepUntil(date) wakes at that date", async (db) => {
  const h = harness(db.store);
  const target = new Date(h.clock.now().getTime() + 26 * 3600 * 1000);
  const run = await runTaskToEnd(
    h,
    `export default async function ({ at }) {
      await sleepUntil(new Date(at));
      return Date.now() >= Date.parse(at);
    }`,
    { at: target.toISOString() },
  );
  assert.equal(run.result, true);
  assert.ok(h.clock.now() >= target);
});

test("a task with 1,000 durable steps completes, and its snapshot does not grow with the steps", async (db) => {
  const h = harness(db.store);
  const run = await runTaskToEnd(
    h,
    `export default async function ({ steps }) {
      let total = 0;
      for (let i = 1; i <= steps; i++) { await checkpoint(); total += i; }
      return total;
    }`,
    { steps: 1000 },
    { maxInvocations: 1100 },
  );
  assert.equal(run.status, "completed");
  assert.equal(run.result, 500500);
  assert.equal(run.suspensions, 1000);
  const sizes = h.invocations.filter((i) => i.snapshotBytes).map((i) => i.snapshotBytes!);
  assert.equal(sizes.length, 1000);
  // it does not grow with the steps: once warm (freed blocks dirty a few more pages, then
  // are reused), the second half of the run saves snapshots the size of the first half's
  const middle = Math.max(...sizes.slice(490, 510));
  const late = Math.max(...sizes.slice(-20));
  assert.ok(late < middle * 1.25, `snapshot grew from ${middle} to ${late} bytes`);
  assert.ok(late < 64 * 1024, `${late} bytes`);
});

test("a heap grown to 50 MB survives a suspension byte for byte", async (db) => {
  const h = harness(db.store);
  const id = await startTask(
    h,
    `export default async function ({ mb }) {
      const blocks = [];
      for (let i = 0; i < mb; i++) blocks.push(new Uint8Array(1024 * 1024).fill(i % 251));
      await sleep("1 hour");
      let bad = 0;
      blocks.forEach((b, i) => { for (let j = 0; j < b.length; j += 4093) if (b[j] !== i % 251) bad++; });
      return { blocks: blocks.length, bad };
    }`,
    { mb: 50 },
    { limits: { memoryBytes: 96 * 1024 * 1024 } }, // the largest a task may ask for
  );
  const results = await h.engine.claimAndRun({ runId: id });
  assert.equal(results[0]!.status, "suspended");
  const snapshot = (await db.store.getSnapshot(id))!;
  const { header } = await readSnapshot(snapshot.bytes);
  assert.ok(header.memoryBytes >= 50 * 1024 * 1024, `memory ${header.memoryBytes}`);
  const run = await runToEnd(h, id);
  assert.deepEqual(run.result, { blocks: 50, bad: 0 });
});

test("a run finishes with the code it started with when its task is updated while it sleeps", async (db) => {
  const h = harness(db.store);
  const version = (v: string) =>
    `export default async function () { await sleep("1 day"); return "${v}"; }`;
  const name = `versioned_${Date.now().toString(36)}`;
  const first = await startTask(h, version("v1"), null, { name });
  await h.engine.claimAndRun({ runId: first });
  assert.equal((await db.store.getRun(first))!.status, "suspended");
  const published = await db.store.publishTask({ name, code: version("v2") });
  assert.equal(published.version, 2);
  const second = (await db.store.enqueueRun({ task: name, now: h.clock.now() })).id;
  assert.equal((await runToEnd(h, first)).result, "v1");
  assert.equal((await runToEnd(h, second)).result, "v2");
});

/** Rewrites a snapshot's header, keeping its checksum valid (a snapshot from elsewhere). */
async function withHeader(bytes: Uint8Array, change: (header: Record<string, Json>) => void) {
  const { header, body } = await readSnapshot(bytes);
  change(header as unknown as Record<string, Json>);
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + 32 + 4 + json.length + body.length);
  out.set(bytes.subarray(0, 8));
  new DataView(out.buffer).setUint32(40, json.length, true);
  out.set(json, 44);
  out.set(body, 44 + json.length);
  out.set(new Uint8Array(await crypto.subtle.digest("SHA-256", out.subarray(40))), 8);
  return out;
}

async function sleepingRun(h: ReturnType<typeof harness>) {
  const id = await startTask(
    h,
    `export default async function () { await sleep("1 hour"); return "woke"; }`,
  );
  await h.engine.claimAndRun({ runId: id });
  return id;
}

test("a corrupted snapshot fails its run with SNAPSHOT_CORRUPT, never stuck, and other runs go on", async (db) => {
  const h = harness(db.store);
  const broken = await sleepingRun(h);
  const healthy = await sleepingRun(h);
  await db.query(
    "update quickjs.snapshots set bytes = overlay(bytes placing '\\xdeadbeef'::bytea from 2000) where run_id = $1",
    [broken],
  );
  const a = await runToEnd(h, broken);
  assert.equal(a.status, "failed");
  assert.equal(a.error?.code, "SNAPSHOT_CORRUPT");
  const b = await runToEnd(h, healthy);
  assert.equal(b.status, "completed");
  assert.equal(b.result, "woke");
});

test("a snapshot from another build fails its run with SNAPSHOT_INCOMPATIBLE", async (db) => {
  const h = harness(db.store);
  const cases: [string, (header: Record<string, Json>) => void][] = [
    ["wasm", (header) => (header.wasmSha256 = "0".repeat(64))],
    ["setup", (header) => (header.baseline = "asyncify-000000000000-other-prelude")],
    ["format", (header) => (header.format = 99)],
  ];
  for (const [what, change] of cases) {
    const id = await sleepingRun(h);
    const snapshot = (await db.store.getSnapshot(id))!;
    const altered = await withHeader(snapshot.bytes, change);
    await db.query("update quickjs.snapshots set bytes = $2 where run_id = $1", [id, altered]);
    const run = await runToEnd(h, id);
    assert.equal(run.status, "failed", what);
    assert.equal(run.error?.code, "SNAPSHOT_INCOMPATIBLE", `${what}: ${run.error?.message}`);
  }
});

test("a task version whose limits were written out of range by hand fails its runs with TASK_INVALID, not a crash loop", async (db) => {
  const h = harness(db.store);
  const id = await startTask(h, `export default async () => 1`);
  await db.query(
    `update quickjs.task_versions v set limits = '{"memoryBytes": 5}'
     from quickjs.runs r where r.id = $1 and v.task_id = r.task_id and v.version = r.task_version`,
    [id],
  );
  const [result] = await h.engine.claimAndRun({ runId: id });
  assert.equal(result?.status, "failed");
  const run = (await db.store.getRun(id))!;
  assert.equal(run.error?.code, "TASK_INVALID");
  assert.match(run.error!.message, /memoryBytes/);
});

test("the engine runs a durable task just the same through supabase-js and PostgREST", async (db) => {
  const postgrest = postgrestDouble(db.driver, { serviceRoleKey: "service-key" });
  const store = new Store(
    supabaseDriver("http://project.supabase.test", "service-key", { fetch: postgrest.fetch }),
  );
  const h = harness(store);
  const child = `double_${Date.now().toString(36)}`;
  await store.publishTask({ name: child, code: `export default async (n) => n * 2` });
  const run = await runTaskToEnd(
    h,
    `export default async function (input) {
      await tools.kv.set("through-postgrest", input);
      await sleep("3 hours");
      const back = await tools.kv.get("through-postgrest");
      return { back, child: await tools.tasks.execute("${child}", 2) };
    }`,
    { n: 7 },
  );
  assert.equal(run.status, "completed");
  assert.deepEqual(run.result, { back: { n: 7 }, child: 4 });
  assert.ok(run.suspensions >= 2, "the sleep and the child each saved the VM");
  const used = new Set(postgrest.requests.map((r) => r.path.replace("/rest/v1/rpc/", "")));
  for (const op of ["claim_runs", "record_call", "suspend_run", "start_child", "complete_run"]) {
    assert.ok(used.has(op), `${op} went through PostgREST`);
  }
});
