/**
 * What one invocation may spend: a synchronous stretch longer than the slice fails the run;
 * a spent CPU or wall budget, a call that cannot finish in time, or a `yield` signal
 * suspends the run at the next idle point, and a new invocation continues it at once.
 */
import assert from "node:assert/strict";
import { dbTests } from "../support/db.ts";
import { harness, runTaskToEnd, runToEnd, startTask } from "../support/engine_harness.ts";
import { callOf, deferred, invokeOnce, logsOf, never, pause } from "../support/engine_scenarios.ts";
import { IsolateLife, type ToolCallContext } from "../../supabase/functions/_shared/quickjs/mod.ts";

const { test } = dbTests("engine_budget");

/** Busy for `chunkMs` per chunk, `chunks` times; with `split`, `await checkpoint()` between. */
const CHUNKED_WORK = `export default async function ({ chunks, chunkMs, split }) {
  let hash = 7;
  for (let c = 0; c < chunks; c++) {
    const end = Date.now() + chunkMs;
    while (Date.now() < end) {}
    for (let i = 0; i < 1000; i++) hash = (hash * 31 + i + c) | 0;
    if (split) await checkpoint();
  }
  return { chunks, hash };
}`;

test("a synchronous stretch longer than sliceMs fails the run with SANDBOX_TIMEOUT and advises await checkpoint()", async (db) => {
  const h = harness(db.store);
  const run = await runTaskToEnd(h, CHUNKED_WORK, { chunks: 5, chunkMs: 60, split: false }, {
    limits: { sliceMs: 200 },
  });
  assert.equal(run.status, "failed");
  assert.equal(run.error?.code, "SANDBOX_TIMEOUT");
  assert.match(run.error!.message, /200 ms/);
  assert.match(run.error!.message, /await checkpoint\(\)/);
  assert.equal(h.invocations.length, 1);
});

test("the same work split by await checkpoint() completes over several invocations", async (db) => {
  const h = harness(db.store);
  const run = await runTaskToEnd(h, CHUNKED_WORK, { chunks: 5, chunkMs: 60, split: true }, {
    limits: { sliceMs: 200 },
  });
  assert.equal(run.status, "completed", JSON.stringify(run.error));
  assert.equal((run.result as { chunks: number }).chunks, 5);
  assert.equal(run.suspensions, 5, "each checkpoint suspends");
  assert.equal(h.invocations.length, 6);
  assert.deepEqual(h.invocations.slice(0, -1).map((i) => i.status), Array(5).fill("queued"));
});

/** Busy `chunkMs` of CPU, then an in-process await (a 1 ms sleep), `rounds` times. */
const ROUNDS = `export default async function ({ rounds, chunkMs }) {
  let hash = 1;
  for (let r = 0; r < rounds; r++) {
    const end = Date.now() + chunkMs;
    while (Date.now() < end) {}
    for (let i = 0; i < 500; i++) hash = (hash * 33 + i + r) | 0;
    await sleep(1);
  }
  return { rounds, hash };
}`;

test("a spent CPU budget suspends the run at the next idle point and a new invocation continues it at once", async (db) => {
  const input = { rounds: 6, chunkMs: 30 };
  const big = harness(db.store);
  const reference = await runTaskToEnd(big, ROUNDS, input);
  assert.equal(reference.status, "completed");
  assert.equal(big.invocations.length, 1, "with the default budget it is one invocation");

  const h = harness(db.store, { budget: { cpuMs: 40 } });
  const id = await startTask(h, ROUNDS, input);
  const first = await invokeOnce(h, id);
  assert.equal(first.status, "queued", "due again at once, not sleeping");
  assert.equal(first.wakeAt, null);
  assert.ok(first.cpuMs >= 40, `spent ${first.cpuMs} ms of CPU`);
  const between = (await db.store.getRun(id))!;
  assert.equal(between.status, "queued");
  assert.equal(between.wakeAt, undefined, "no wake time in the future");

  const run = await runToEnd(h, id);
  assert.equal(run.status, "completed");
  assert.deepEqual(run.result, reference.result, "the same result as with a big budget");
  assert.ok(h.invocations.length >= 3, `${h.invocations.length} invocations`);
  for (const i of h.invocations.slice(0, -1)) assert.equal(i.status, "queued");
  assert.equal(h.clock.offsetMs, 0, "the clock never had to jump to a wake time");
  assert.ok(logsOf(run, "system").some((m) => m.startsWith("invocation budget spent")));
});

test("a call still running when the wall budget runs out runs again with the same idempotency key, attempts 2", async (db) => {
  const seen: { key: string; attempt: number }[] = [];
  const h = harness(db.store, {
    budget: { wallMs: 2000 },
    // a short declared timeout, so the call starts in-process instead of being deferred
    tools: { customTimeoutMs: 10 },
    custom: {
      slow: async (_method, _args, context: ToolCallContext) => {
        seen.push({ key: context.idempotencyKey, attempt: context.attempt });
        // the first time it outlives the invocation (it stops when the invocation ends)
        if (seen.length === 1) await pause(30_000, context.signal);
        return "done";
      },
    },
  });
  const id = await startTask(
    h,
    `export default async function () { return await tools.slow.work({ n: 1 }); }`,
  );
  const first = await invokeOnce(h, id);
  assert.equal(first.status, "queued", "suspended to continue at once");
  assert.ok(first.wallMs < 10_000, `the invocation ended at its budget (${first.wallMs} ms)`);
  const run = await runToEnd(h, id);
  assert.equal(run.status, "completed");
  assert.equal(run.result, "done");
  assert.equal(seen.length, 2);
  assert.equal(seen[0]!.key, seen[1]!.key, "the same idempotency key");
  assert.equal(seen[0]!.key, `${id}:1`);
  assert.deepEqual(seen.map((s) => s.attempt), [1, 2]);
  const call = await callOf(h, id, 1);
  assert.equal(call.attempts, 2);
  assert.equal(call.status, "succeeded");
  assert.equal(call.idempotencyKey, seen[0]!.key);
});

test("a call whose timeout is longer than the wall budget left is deferred to the next invocation", async (db) => {
  let invoked = 0;
  const options = {
    budget: { wallMs: 10_000 },
    // shorter than a fresh invocation's 10 s (a longer one is refused: TIMEOUT_OVER_BUDGET)
    tools: { customTimeoutMs: 8_000 },
    custom: { report: () => ++invoked },
  };
  // a worker with 5 s of its life left: the call does not fit in this invocation
  const aged = new IsolateLife({ wallMs: 30_000, wallMarginMs: 0 }, {
    startedAt: performance.now() - 25_000,
  });
  const h = harness(db.store, { ...options, isolate: aged });
  const id = await startTask(
    h,
    `export default async function () { return await tools.report.build(); }`,
  );
  const first = await invokeOnce(h, id);
  assert.equal(first.status, "queued");
  assert.equal(invoked, 0, "not executed in the invocation that could not cover it");
  const parked = await callOf(h, id, 1);
  assert.equal(parked.mode, "durable");
  assert.equal(parked.status, "pending");
  assert.equal(parked.attempts, 0);

  // a fresh worker has the whole 10 s
  const next = harness(db.store, options);
  const run = await runToEnd(next, id);
  assert.equal(run.status, "completed");
  assert.equal(run.result, 1);
  assert.equal(invoked, 1);
  assert.deepEqual([...h.invocations, ...next.invocations].map((i) => [i.status, i.restored]), [
    ["queued", false],
    ["completed", true],
  ]);
  const done = await callOf(h, id, 1);
  assert.equal(done.mode, "inline", "the next invocation ran it in-process");
  assert.equal(done.attempts, 1);
  assert.equal(done.status, "succeeded");
});

test("the yield signal makes a running invocation suspend and hand the run over", async (db) => {
  const started = deferred();
  let calls = 0;
  const h = harness(db.store, {
    custom: {
      wait: (_method, _args, context: ToolCallContext) => {
        calls++;
        if (calls === 1) {
          started.resolve();
          return never();
        }
        return context.attempt;
      },
    },
  });
  const id = await startTask(
    h,
    `export default async function () { return { attempt: await tools.wait.forIt() }; }`,
  );
  const handOver = new AbortController();
  const invocation = invokeOnce(h, id, { yield: handOver.signal });
  await started.promise;
  handOver.abort();
  const first = await invocation;
  assert.equal(first.status, "queued", "handed over, due at once");
  const between = (await db.store.getRun(id))!;
  assert.ok(
    logsOf(between, "system").some((m) => m.startsWith("handed over by test-worker")),
    JSON.stringify(between.logs),
  );
  const run = await runToEnd(h, id);
  assert.equal(run.status, "completed");
  assert.deepEqual(run.result, { attempt: 2 }, "the call cut off by the hand-over ran again");
  assert.equal(h.invocations.length, 2);
  assert.equal(h.invocations[1]!.restored, true);
  assert.equal(h.clock.offsetMs, 0);
});

/** A signal that counts the listeners added to it and not removed yet. */
function countingSignal(): { signal: AbortSignal; active: () => number } {
  const signal = new AbortController().signal;
  const listeners = new Set<unknown>();
  const add = signal.addEventListener.bind(signal);
  const remove = signal.removeEventListener.bind(signal);
  signal.addEventListener = (type: string, listener: unknown, options?: unknown) => {
    listeners.add(listener);
    add(type, listener as EventListener, options as AddEventListenerOptions);
  };
  signal.removeEventListener = (type: string, listener: unknown, options?: unknown) => {
    listeners.delete(listener);
    remove(type, listener as EventListener, options as EventListenerOptions);
  };
  return { signal, active: () => listeners.size };
}

test("worker-wide signals keep no listener of an ended invocation (the leak that slowed long-lived workers)", async (db) => {
  const h = harness(db.store, { custom: { step: () => 1 } });
  const handOver = countingSignal();
  const crash = countingSignal();
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) {
    ids.push(
      await startTask(
        h,
        `export default async function () {
          let n = 0;
          for (let i = 0; i < 10; i++) { n += await tools.step.go(); await sleep(1); }
          return n;
        }`,
      ),
    );
  }
  for (const id of ids) {
    for (;;) {
      const result = await invokeOnce(h, id, { yield: handOver.signal, abort: crash.signal });
      if (result.status === "completed") break;
    }
  }
  assert.equal(handOver.active(), 0, "listeners left on the yield signal");
  assert.equal(crash.active(), 0, "listeners left on the abort signal");
});
