/**
 * The worker's thread pool (scripts/lib/threads/): invocations run on threads a watchdog
 * stops when a task holds one past its slice inside a built-in the interrupt handler cannot
 * reach. The run fails SANDBOX_TIMEOUT with its last snapshot intact; the other threads'
 * runs finish untouched; and runs on threads behave as they do in-process.
 */
import assert from "node:assert/strict";
import { testGroup } from "../support/groups.ts";
import type { TestDb } from "../support/db.ts";
import {
  Engine,
  type EngineEvent,
  type InvocationResult,
  type RunView,
  ToolRegistry,
} from "../../supabase/functions/_shared/quickjs/mod.ts";
import { ThreadPool } from "../../scripts/lib/threads/pool.ts";
import { ROOT } from "../support/cli.ts";

const { test } = testGroup("threads");

let counter = 0;
async function publish(db: TestDb, code: string, limits?: Record<string, number>) {
  const name = `th${Date.now().toString(36)}_${++counter}`;
  await db.store.publishTask({ name, code, ...(limits ? { limits } : {}) });
  return name;
}

/** An engine whose invocations run on a pool of `size` threads over the test database. */
function threadedEngine(db: TestDb, size: number, options: { inlineSleepMaxMs?: number } = {}) {
  const events: EngineEvent[] = [];
  const workerId = `threads-${++counter}`;
  const inlineSleepMaxMs = options.inlineSleepMaxMs ?? 5_000;
  const pool = new ThreadPool({
    size,
    driver: db.store.driver,
    config: { workerId, leaseSeconds: 30, inlineSleepMaxMs, durableAll: false, spareVm: false },
  });
  const engine = new Engine({
    store: db.store,
    tools: new ToolRegistry(db.store),
    workerId,
    inlineSleepMaxMs,
    executor: pool,
    onEvent: (event) => events.push(event),
  });
  return { pool, engine, events };
}

async function runToEnd(engine: Engine, runId: string): Promise<InvocationResult[]> {
  const results: InvocationResult[] = [];
  for (let i = 0; i < 100; i++) {
    const [result] = await engine.claimAndRun({ runId });
    if (result) results.push(result);
    if (result && result.status !== "queued" && result.status !== "suspended") return results;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`run ${runId} did not end: ${JSON.stringify(results.at(-1))}`);
}

async function view(db: TestDb, runId: string): Promise<RunView> {
  const run = await db.store.getRun(runId);
  assert.ok(run, `run ${runId} exists`);
  return run;
}

/**
 * One instruction the interrupt handler cannot split: a million-bit BigInt (about the
 * largest QuickJS makes) to decimal, ~5 s on this machine, quadratic in C.
 */
const BIGINT_TO_STRING = `(2n ** 1000000n).toString().length`;

const BENIGN = `export default async function (input) {
  let sum = 0;
  for (let i = 0; i < 5; i++) sum += (await tools.kv.set("k" + input + "_" + i, i), i);
  return { sum, input };
}`;

test("a BigInt's decimal string, out of the interrupt's reach, fails SANDBOX_TIMEOUT on a thread the watchdog stops; the other runs finish", async (db) => {
  const stuck = await publish(
    db,
    `export default async function () { return ${BIGINT_TO_STRING}; }`,
    { sliceMs: 200 },
  );
  const benign = await publish(db, BENIGN);
  const { pool, engine } = threadedEngine(db, 3);
  try {
    await engine.prepare();
    const stuckRun = await db.store.enqueueRun({ task: stuck });
    const others = await Promise.all(
      [1, 2, 3, 4].map((i) => db.store.enqueueRun({ task: benign, input: i })),
    );
    const [stuckResult, ...otherResults] = await Promise.all([
      runToEnd(engine, stuckRun.id),
      ...others.map((run) => runToEnd(engine, run.id)),
    ]);
    const failed = stuckResult!.at(-1)!;
    assert.equal(failed.status, "failed");
    assert.equal(failed.error?.code, "SANDBOX_TIMEOUT");
    assert.match(failed.error!.message, /thread was stopped/);
    const run = await view(db, stuckRun.id);
    assert.equal(run.status, "failed");
    assert.equal(run.error?.code, "SANDBOX_TIMEOUT");
    for (const [i, results] of otherResults.entries()) {
      assert.equal(results.at(-1)!.status, "completed");
      assert.deepEqual((await view(db, others[i]!.id)).result, { sum: 10, input: i + 1 });
    }
    const [preemption] = pool.preemptions;
    assert.ok(preemption, "the watchdog stopped the thread");
    assert.equal(preemption.runId, stuckRun.id);
    assert.equal(preemption.sliceMs, 200);
    // unstopped, the instruction holds the thread ~5 s
    assert.ok(preemption.heldMs < 2_000, `held ${preemption.heldMs} ms`);
    console.log(
      `[threads] held ${preemption.heldMs} ms for a ${preemption.sliceMs} ms slice ` +
        `(overshoot ${preemption.heldMs - preemption.sliceMs} ms)`,
    );
    assert.ok(pool.threads <= 3);
  } finally {
    await engine.close();
  }
});

test("a run stopped on its thread fails under its lease with the journal its last invocation left", async (db) => {
  const task = await publish(
    db,
    `export default async function () {
      await tools.kv.set("before", 1);
      await sleep("300ms");
      return ${BIGINT_TO_STRING};
    }`,
    { sliceMs: 200 },
  );
  const { engine, events } = threadedEngine(db, 1, { inlineSleepMaxMs: 0 });
  try {
    const { id } = await db.store.enqueueRun({ task });
    const [first] = await engine.claimAndRun({ runId: id });
    assert.equal(first?.status, "suspended");
    assert.ok(await db.store.getSnapshot(id), "the sleep saved the VM");
    await new Promise((r) => setTimeout(r, 400)); // the sleep is due
    const [last] = await engine.claimAndRun({ runId: id });
    assert.equal(last?.error?.code, "SANDBOX_TIMEOUT");
    assert.equal(last.restored, true, "the stopped invocation had restored the VM");
    // an ended run keeps no snapshot (quickjs.finish_run), however it ended
    assert.equal(await db.store.getSnapshot(id), null);
    assert.equal((await view(db, id)).status, "failed");
    const calls = await db.store.listCalls(id);
    assert.deepEqual(calls.map((c) => c.service), ["kv", "sleep"]);
    assert.ok(events.some((e) => e.type === "restored" && e.runId === id));
    assert.ok(events.some((e) => e.type === "failed" && e.runId === id));
  } finally {
    await engine.close();
  }
});

test("runs on threads sleep, resume and finish as they do in-process", async (db) => {
  const task = await publish(
    db,
    `export default async function (input) {
      const a = await tools.kv.set("t" + input, input);
      await sleep("1ms");
      await checkpoint();
      return { input, got: await tools.kv.get("t" + input) };
    }`,
  );
  const { engine } = threadedEngine(db, 2, { inlineSleepMaxMs: 0 });
  try {
    const runs = await Promise.all([1, 2, 3].map((i) => db.store.enqueueRun({ task, input: i })));
    const results = await Promise.all(runs.map((run) => runToEnd(engine, run.id)));
    for (const [i, run] of runs.entries()) {
      assert.equal(results[i]!.at(-1)!.status, "completed");
      assert.ok(results[i]!.length >= 2, "the run suspended and resumed on a thread");
      assert.deepEqual((await view(db, run.id)).result, { input: i + 1, got: i + 1 });
    }
  } finally {
    await engine.close();
  }
});

test("a store error crosses the thread with its code: a run taken over is lost, not failed", async (db) => {
  const task = await publish(
    db,
    `export default async function () { await tools.kv.set("x", 1); return 1; }`,
  );
  const { engine } = threadedEngine(db, 1);
  try {
    const { id } = await db.store.enqueueRun({ task });
    const claim = async (worker: string) =>
      (await db.store.claimRuns({ worker, limit: 1, leaseSeconds: 30, runId: id }))[0];
    const claimed = await claim("w1");
    assert.ok(claimed);
    // another worker's claim fences this one's lease off before its first write
    await db.query(
      `update quickjs.runs set lease_expires_at = now() - interval '1 s' where id = $1`,
      [id],
    );
    const other = await claim("w2");
    assert.ok(other);
    const result = await engine.runClaimed(claimed);
    assert.equal(result.status, "lost");
    assert.equal((await view(db, id)).status, "running", "the new holder's run is untouched");
  } finally {
    await engine.close();
  }
});

test(
  "deno task serve (real process, real HTTP) stops a BigInt's decimal string on its thread and keeps serving",
  async (db) => {
    const stuck = await publish(
      db,
      `export default async function () { return ${BIGINT_TO_STRING}; }`,
      { sliceMs: 200 },
    );
    const benign = await publish(db, BENIGN);
    const port = 20_000 + Math.floor(Math.random() * 20_000);
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--frozen", `${ROOT}scripts/serve.ts`],
      cwd: ROOT,
      env: {
        DATABASE_URL: db.url!,
        SUPABASE_SERVICE_ROLE_KEY: "threads-test-key",
        PORT: String(port),
        QUICKJS_THREADS: "2",
      },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const output = child.output();
    const post = async (body: unknown) => {
      const response = await fetch(`http://127.0.0.1:${port}/quickjs/runs`, {
        method: "POST",
        headers: { authorization: "Bearer threads-test-key", "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      return { status: response.status, body: await response.json() };
    };
    try {
      for (let i = 0;; i++) {
        try {
          await fetch(`http://127.0.0.1:${port}/quickjs/runs/none`).then((r) => r.body?.cancel());
          break;
        } catch {
          if (i > 300) throw new Error("serve did not start");
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      const [stopped, ok] = await Promise.all([
        post({ task: stuck, wait: 10_000 }),
        post({ task: benign, input: 7, wait: 10_000 }),
      ]);
      assert.equal(stopped.status, 200, JSON.stringify(stopped.body));
      assert.equal(stopped.body.run.status, "failed");
      assert.equal(stopped.body.run.error.code, "SANDBOX_TIMEOUT");
      assert.match(stopped.body.run.error.message, /thread was stopped/);
      assert.equal(ok.body.run.status, "completed");
      // the server goes on serving on a new thread
      const again = await post({ task: benign, input: 8, wait: 10_000 });
      assert.deepEqual(again.body.run.result, { sum: 10, input: 8 });
    } finally {
      child.kill("SIGTERM");
      const out = await output;
      const stderr = new TextDecoder().decode(out.stderr);
      assert.match(stderr, /stopped the thread of run/, stderr);
    }
  },
  { serverOnly: "runs deno task serve as a subprocess, which cannot open the tests' PGlite" },
);
