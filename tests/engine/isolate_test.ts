/**
 * The worker's life as Supabase counts it: an invocation's budget ends inside the worker's
 * wall clock and CPU over its life, and `beforeunload` makes running invocations suspend at
 * their next idle point, so the platform never ends a worker under a run's feet.
 */
import assert from "node:assert/strict";
import { dbTests } from "../support/db.ts";
import { harness, runToEnd, startTask } from "../support/engine_harness.ts";
import { deferred, invokeOnce, logsOf, never } from "../support/engine_scenarios.ts";
import {
  IsolateLife,
  isolateLimitsFromEnv,
  SUPABASE_FREE,
} from "../../supabase/functions/_shared/quickjs/mod.ts";

const { test } = dbTests("engine_isolate");

/** Busy `chunkMs`, then an in-process await, `rounds` times. */
const ROUNDS = `export default async function ({ rounds, chunkMs }) {
  for (let r = 0; r < rounds; r++) {
    const end = Date.now() + chunkMs;
    while (Date.now() < end) {}
    await sleep(1);
  }
  return { rounds };
}`;

/** A worker that has lived `ageMs` already: performance.now() - ageMs as its start. */
const agedWorker = (limits: ConstructorParameters<typeof IsolateLife>[0], ageMs: number) =>
  new IsolateLife(limits, { startedAt: performance.now() - ageMs, cpuAtStartMs: 0 });

test("an invocation ends its wall budget where the worker's life ends, not 140 s later", async (db) => {
  // 150 s worker, 10 s kept back, already 139.8 s old: 200 ms left for this invocation
  const isolate = new IsolateLife(SUPABASE_FREE, { startedAt: performance.now() - 139_800 });
  const h = harness(db.store, { isolate });
  const id = await startTask(h, ROUNDS, { rounds: 20, chunkMs: 30 });
  const first = await invokeOnce(h, id);
  assert.equal(first.status, "queued", "suspended to continue at once elsewhere");
  assert.ok(first.wallMs < 2_000, `ended after ${first.wallMs} ms`);
  const run = await runToEnd(h, id);
  assert.equal(run.status, "completed");
  assert.ok(h.invocations.length > 2, "each later invocation has no wall time left either");
});

test("CPU over the worker's life ends the invocation at an idle point, and the run continues", async (db) => {
  let spent = 0;
  // a worker whose CPU figure we control: 0 until the task has run, then over the limit
  const isolate = new (class extends IsolateLife {
    override cpuMs() {
      return spent;
    }
  })({ cpuMs: 1_000, cpuMarginMs: 0 });
  const h = harness(db.store, { isolate, custom: { spend: () => void (spent = 5_000) } });
  const id = await startTask(
    h,
    `export default async function () { await tools.spend.it(); await sleep(1); return "done"; }`,
  );
  const first = await invokeOnce(h, id);
  assert.equal(first.status, "queued");
  spent = 0; // a new worker continues it
  const run = await runToEnd(h, id);
  assert.equal(run.status, "completed");
  assert.equal(run.result, "done");
});

test("beforeunload makes a running invocation suspend at its next idle point and hand the run over", async (db) => {
  const target = new EventTarget();
  const isolate = new IsolateLife({});
  const stop = isolate.listen(target);
  const started = deferred();
  let calls = 0;
  const h = harness(db.store, {
    isolate,
    custom: {
      wait: () => {
        if (++calls === 1) {
          started.resolve();
          return never();
        }
        return calls;
      },
    },
  });
  const id = await startTask(h, `export default async () => ({ got: await tools.wait.forIt() })`);
  const invocation = invokeOnce(h, id);
  await started.promise;
  target.dispatchEvent(new CustomEvent("beforeunload", { detail: { reason: "wall_clock" } }));
  const first = await invocation;
  stop();
  assert.equal(first.status, "queued");
  const between = (await db.store.getRun(id))!;
  assert.ok(
    logsOf(between, "system").some((m) => /handed over .*wall_clock/.test(m)),
    JSON.stringify(between.logs),
  );
  // another worker (a fresh life) finishes it; the cut-off call ran again
  const next = harness(db.store, { custom: { wait: () => 2 } });
  const run = await runToEnd(next, id);
  assert.equal(run.status, "completed");
  assert.deepEqual(run.result, { got: 2 });
});

Deno.test("isolateLimitsFromEnv: Supabase's free plan by default, ms or off from the environment", () => {
  const env = (vars: Record<string, string>) => ({ get: (name: string) => vars[name] });
  assert.deepEqual(isolateLimitsFromEnv(env({})), { ...SUPABASE_FREE });
  const paid = isolateLimitsFromEnv(
    env({ QUICKJS_WORKER_WALL_MS: "400000", QUICKJS_WORKER_CPU_MS: "off" }),
  );
  assert.equal(paid.wallMs, 400_000);
  assert.equal(paid.cpuMs, Infinity);
  assert.throws(
    () => isolateLimitsFromEnv(env({ QUICKJS_WORKER_CPU_MS: "-1" })),
    /QUICKJS_WORKER_CPU_MS/,
  );
});

Deno.test("a worker's CPU figure never exceeds its age: other threads of the process do not count", () => {
  // this test process has spent far more than 50 ms of CPU since it started
  const young = agedWorker({}, 50);
  assert.ok(young.cpuMs() >= 40 && young.cpuMs() <= 60, `${young.cpuMs()}`);
});
