/**
 * Asynchronous service calls: a call that outlives any invocation is sent once with a
 * completion URL and token, the run waits suspended, and the service's completion (HTTP or
 * SQL) continues it; no completion by the deadline fails the call CALL_TIMEOUT. Real
 * engine, real HTTP service, the function's real route for the completion.
 */
import assert from "node:assert/strict";
import { createApp } from "../../supabase/functions/quickjs/http/app.ts";
import {
  type CallCompletion,
  type Json,
  type SnapshotKey,
  StoreError,
} from "../../supabase/functions/_shared/quickjs/mod.ts";
import { dbTests, type TestDb } from "../support/db.ts";
import { type Harness, harness, runToEnd } from "../support/engine_harness.ts";
import {
  callOf,
  invokeOnce,
  json,
  serve,
  startWith,
  taskName,
} from "../support/engine_scenarios.ts";
import { leaseOf, startRun } from "../support/runs.ts";

const { test } = dbTests("engine_async_calls");

const SERVICE_KEY = "async-calls-test-service-key";
const BASE = "https://project.example/functions/v1/quickjs";

interface Received {
  method: string;
  args: Json[];
  attempt: number;
  idempotencyKey: string;
  completion: CallCompletion;
}

/**
 * An asynchronous service: records each request and acknowledges it with 202. `before`
 * runs before the acknowledgement (to complete the call first, say).
 */
async function asyncService(
  db: TestDb,
  options: {
    completionTimeoutMs?: number;
    heartbeatTimeoutMs?: number;
    retry?: Json;
    /** Runs before the answer; a Response it returns is the answer instead of the 202. */
    before?: (r: Received) => Promise<Response | void>;
  } = {},
) {
  const received: Received[] = [];
  const server = serve(async (request) => {
    const body = await request.json() as Received;
    received.push(body);
    return await options.before?.(body) ?? json({ accepted: true }, 202);
  });
  const name = taskName("async").replace(/[^A-Za-z0-9_-]/g, "_");
  await db.query(
    `insert into quickjs.services
       (name, url, timeout_ms, completion, completion_timeout_ms, heartbeat_timeout_ms, retry)
     values ($1, $2, 2000, 'async', $3, $4, $5::text::jsonb)`,
    [
      name,
      server.url,
      options.completionTimeoutMs ?? 3_600_000,
      options.heartbeatTimeoutMs ?? null,
      options.retry === undefined ? null : JSON.stringify(options.retry),
    ],
  );
  return { name, received, close: () => server.close() };
}

function engineFor(db: TestDb, options: { snapshotKeys?: SnapshotKey[] } = {}): Harness {
  return harness(db.store, { tools: { completionBaseUrl: BASE }, ...options });
}

/** POST …/runs/:id/calls/:seq/complete (or …/heartbeat) through the function's app, as a service would. */
async function completeOverHttp(h: Harness, path: string, body: unknown) {
  const app = createApp({
    store: h.store,
    engine: h.engine,
    auth: { serviceRoleKey: SERVICE_KEY },
  });
  const res = await app(
    new Request(`http://localhost${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${SERVICE_KEY}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    }),
  );
  return { status: res.status, json: await res.json() };
}

const AWAIT_ONE = `export default async function ({ svc }) {
  const receipt = await tools[svc].charge({ amount: 42 });
  return { receipt };
}`;

test("a call longer than any invocation is sent once, the run suspends, and the completion resumes it", async (db) => {
  const service = await asyncService(db);
  try {
    const h = engineFor(db);
    const id = await startWith(h, AWAIT_ONE, { svc: service.name });
    const first = await invokeOnce(h, id);
    assert.equal(first.status, "suspended", JSON.stringify(first));
    const parked = (await h.store.getRun(id))!;
    assert.equal(parked.status, "suspended");
    assert.deepEqual(parked.waitingOn?.completions, [1]);
    assert.equal(service.received.length, 1);
    const sent = service.received[0]!;
    assert.deepEqual(sent.args, [{ amount: 42 }]);
    assert.equal(sent.completion.url, `${BASE}/runs/${id}/calls/1/complete`);
    assert.match(sent.completion.token, /^[A-Za-z0-9_-]{43}$/);
    const call = await callOf(h, id, 1);
    assert.equal(call.awaiting, true);
    const left = Date.parse(call.deadlineAt!) - h.clock.now().getTime();
    assert.ok(left > 3_590_000 && left <= 3_600_000, `deadline in ${left} ms`);
    // most of the hour passes: nothing is due, nothing is sent again
    h.clock.jumpTo(new Date(h.clock.now().getTime() + 3_000_000));
    assert.deepEqual(await h.engine.claimAndRun({ limit: 8 }), []);

    const done = await completeOverHttp(h, `/quickjs/runs/${id}/calls/1/complete`, {
      token: sent.completion.token,
      result: { receipt: "r-1", zeta: 1, alpha: 2 },
    });
    assert.equal(done.status, 200, JSON.stringify(done.json));
    assert.equal(done.json.alreadyCompleted, false);
    assert.equal(done.json.call.status, "succeeded");
    assert.equal((await h.store.getRun(id))!.status, "queued");
    const run = await runToEnd(h, id);
    assert.equal(run.status, "completed", JSON.stringify(run.error));
    assert.deepEqual(run.result, { receipt: { receipt: "r-1", zeta: 1, alpha: 2 } });
    assert.equal(service.received.length, 1, "sent once, across invocations");
  } finally {
    await service.close();
  }
});

test("a completion with another token is 403 COMPLETION_REFUSED; a second completion changes nothing", async (db) => {
  const service = await asyncService(db);
  try {
    const h = engineFor(db);
    const id = await startWith(h, AWAIT_ONE, { svc: service.name });
    await invokeOnce(h, id);
    const path = `/quickjs/runs/${id}/calls/1/complete`;
    const forged = await completeOverHttp(h, path, { token: "x".repeat(43), result: "forged" });
    assert.equal(forged.status, 403, JSON.stringify(forged.json));
    assert.equal(forged.json.error.code, "COMPLETION_REFUSED");
    assert.equal(
      (await h.store.getRun(id))!.status,
      "suspended",
      "a refused completion wakes nothing",
    );
    const missing = await completeOverHttp(h, `/quickjs/runs/${id}/calls/7/complete`, {
      token: "t",
      result: 1,
    });
    assert.equal(missing.status, 404);
    assert.equal(missing.json.error.code, "CALL_NOT_FOUND");
    const both = await completeOverHttp(h, path, { token: "t", result: 1, error: { code: "X" } });
    assert.equal(both.status, 422);

    const token = service.received[0]!.completion.token;
    assert.equal((await completeOverHttp(h, path, { token, result: "first" })).status, 200);
    const again = await completeOverHttp(h, path, { token, result: "second" });
    assert.equal(again.status, 200);
    assert.equal(again.json.alreadyCompleted, true);
    const run = await runToEnd(h, id);
    assert.deepEqual(run.result, { receipt: "first" });
  } finally {
    await service.close();
  }
});

test("an asynchronous call with no completion by its deadline fails CALL_TIMEOUT, which the task can catch", async (db) => {
  const service = await asyncService(db, { completionTimeoutMs: 60_000 });
  try {
    const h = engineFor(db);
    const id = await startWith(
      h,
      `export default async function ({ svc }) {
        try {
          return await tools[svc].charge(1);
        } catch (e) {
          return { code: e.code, message: e.message };
        }
      }`,
      { svc: service.name },
    );
    await invokeOnce(h, id);
    h.clock.jumpTo(new Date(h.clock.now().getTime() + 59_000));
    assert.equal((await h.store.tick(h.clock.now())).expired, 0);
    h.clock.jumpTo(new Date(h.clock.now().getTime() + 2_000));
    assert.equal((await h.store.tick(h.clock.now())).expired, 1);
    const run = await runToEnd(h, id);
    assert.equal(run.status, "completed", JSON.stringify(run.error));
    const caught = run.result as { code: string; message: string };
    assert.equal(caught.code, "CALL_TIMEOUT");
    assert.match(caught.message, /no completion by its deadline/);
    // the service's late completion is too late: the call stays failed
    const late = await h.store.completeCall({
      runId: id,
      seq: 1,
      token: service.received[0]!.completion.token,
      result: "late",
    });
    assert.equal(late.alreadyCompleted, true);
    assert.equal(late.status, "failed");
  } finally {
    await service.close();
  }
});

test("an error completion fails the call with the service's own code and data", async (db) => {
  const service = await asyncService(db);
  try {
    const h = engineFor(db);
    const id = await startWith(
      h,
      `export default async function ({ svc }) {
        try {
          return await tools[svc].charge(1);
        } catch (e) {
          return { code: e.code, message: e.message, data: e.data };
        }
      }`,
      { svc: service.name },
    );
    await invokeOnce(h, id);
    const done = await completeOverHttp(h, `/quickjs/runs/${id}/calls/1/complete`, {
      token: service.received[0]!.completion.token,
      error: { code: "CARD_DECLINED", message: "insufficient funds", data: { retry: false } },
    });
    assert.equal(done.status, 200, JSON.stringify(done.json));
    const run = await runToEnd(h, id);
    assert.deepEqual(run.result, {
      code: "CARD_DECLINED",
      message: "insufficient funds",
      data: { retry: false },
    });
  } finally {
    await service.close();
  }
});

test("a completion that arrives before the service's acknowledgement is kept, and the run goes on at once", async (db) => {
  let h: Harness | undefined;
  let runId = "";
  const service = await asyncService(db, {
    before: async (r) => {
      await h!.store.completeCall({ runId, seq: 1, token: r.completion.token, result: "quick" });
    },
  });
  try {
    h = engineFor(db);
    runId = await startWith(h, AWAIT_ONE, { svc: service.name });
    const first = await invokeOnce(h, runId);
    assert.equal(first.status, "completed", "delivered in the same invocation");
    assert.deepEqual((await h.store.getRun(runId))!.result, { receipt: "quick" });
    assert.equal(service.received.length, 1);
  } finally {
    await service.close();
  }
});

test("a re-sent asynchronous call carries a new token: the earlier send's token is refused", async (db) => {
  const run = await startRun(db.store);
  const lease = leaseOf(run);
  await db.store.recordCall(lease, {
    seq: 1,
    service: "svc",
    path: ["charge"],
    args: [],
    mode: "inline",
    wakeAt: null,
  });
  const hash = async (t: string) =>
    Array.from(
      new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(t))),
      (b) => b.toString(16).padStart(2, "0"),
    ).join("");
  await db.store.issueCompletion(lease, 1, await hash("first-send"));
  await db.store.issueCompletion(lease, 1, await hash("second-send"));
  await assert.rejects(
    db.store.completeCall({ runId: run.id, seq: 1, token: "first-send", result: 1 }),
    (e) => e instanceof StoreError && e.code === "COMPLETION_REFUSED",
  );
  const done = await db.store.completeCall({
    runId: run.id,
    seq: 1,
    token: "second-send",
    result: 2,
  });
  assert.equal(done.status, "succeeded");
});

test("with an operator key, a completion posted to the route is sealed in the journal, and the task gets it in plain", async (db) => {
  const service = await asyncService(db);
  try {
    const h = engineFor(db, {
      snapshotKeys: [{ id: "k1", secret: crypto.getRandomValues(new Uint8Array(32)) }],
    });
    const id = await startWith(h, AWAIT_ONE, { svc: service.name });
    await invokeOnce(h, id);
    const marker = "card-4242-completion-marker";
    const done = await completeOverHttp(h, `/quickjs/runs/${id}/calls/1/complete`, {
      token: service.received[0]!.completion.token,
      result: { marker },
    });
    assert.equal(done.status, 200, JSON.stringify(done.json));
    const [row] = await db.query<{ result: string; text: string | null }>(
      "select result::text as result, result_text as text from quickjs.calls where run_id = $1 and seq = 1",
      [id],
    );
    assert.ok(row && !row.result.includes(marker), `stored in plain: ${row?.result}`);
    assert.ok(!(row.text ?? "").includes(marker), "nor in its ordered text");
    assert.match(row.result, /"\$sealed": "k1"/);
    const run = await runToEnd(h, id);
    assert.deepEqual(run.result, { receipt: { marker } });
  } finally {
    await service.close();
  }
});

test("a service that stops heartbeating fails its call HEARTBEAT_TIMEOUT long before the completion deadline, and the task can catch it", async (db) => {
  const service = await asyncService(db, { heartbeatTimeoutMs: 10_000 });
  try {
    const h = engineFor(db);
    const id = await startWith(
      h,
      `export default async function ({ svc }) {
        try {
          return await tools[svc].transcode({ file: "a.mp4" });
        } catch (e) {
          return { code: e.code, message: e.message };
        }
      }`,
      { svc: service.name },
    );
    assert.equal((await invokeOnce(h, id)).status, "suspended");
    const sent = service.received[0]!.completion;
    assert.equal(sent.heartbeatUrl, `${BASE}/runs/${id}/calls/1/heartbeat`);
    assert.equal(sent.heartbeatTimeoutMs, 10_000);
    assert.equal(sent.lastHeartbeat, undefined, "a first send has no progress to continue from");
    // acknowledged at: the heartbeat clock starts there
    const sentAt = Date.parse((await callOf(h, id, 1)).heartbeatDeadlineAt!) - 10_000;
    const path = `/quickjs/runs/${id}/calls/1/heartbeat`;

    // a heartbeat 8 s in pushes the deadline to 18 s; the tick at 15 s fails nothing
    h.clock.jumpTo(new Date(sentAt + 8_000));
    const beat = await completeOverHttp(h, path, { token: sent.token, details: { percent: 40 } });
    assert.equal(beat.status, 200, JSON.stringify(beat.json));
    assert.equal(beat.json.proceed, true);
    assert.equal(beat.json.runStatus, "suspended");
    const pushedTo = Date.parse(beat.json.call.heartbeatDeadlineAt) - (sentAt + 18_000);
    assert.ok(pushedTo >= 0 && pushedTo < 500, `deadline 10 s after the heartbeat: ${pushedTo}`);
    assert.deepEqual((await callOf(h, id, 1)).heartbeatDetails, { percent: 40 });
    h.clock.jumpTo(new Date(sentAt + 15_000));
    assert.equal((await h.store.tick(h.clock.now())).expired, 0);
    assert.equal((await h.store.getRun(id))!.status, "suspended");

    // then silence: past 18 s the tick fails the call, 59 minutes before its deadline
    h.clock.jumpTo(new Date(sentAt + 19_000));
    assert.equal((await h.store.tick(h.clock.now())).expired, 1);
    const run = await runToEnd(h, id);
    assert.equal(run.status, "completed", JSON.stringify(run.error));
    const caught = run.result as { code: string; message: string };
    assert.equal(caught.code, "HEARTBEAT_TIMEOUT");
    assert.match(caught.message, /transcode: no heartbeat for 10000 ms \(the last: /);

    // the service, still working, hears it should stop; its completion changes nothing
    const late = await completeOverHttp(h, path, { token: sent.token });
    assert.equal(late.status, 200);
    assert.equal(late.json.proceed, false);
    assert.equal(late.json.alreadyCompleted, true);
    const done = await h.store.completeCall({ runId: id, seq: 1, token: sent.token, result: 1 });
    assert.equal(done.alreadyCompleted, true);
    assert.equal(done.status, "failed");
    assert.equal(service.received.length, 1);
  } finally {
    await service.close();
  }
});

test("heartbeats without a heartbeat timeout never fail a call; a forged token is 403 COMPLETION_REFUSED; a cancelled run's service hears proceed false", async (db) => {
  const service = await asyncService(db);
  try {
    const h = engineFor(db);
    const id = await startWith(h, AWAIT_ONE, { svc: service.name });
    await invokeOnce(h, id);
    const { token, heartbeatTimeoutMs } = service.received[0]!.completion;
    assert.equal(heartbeatTimeoutMs, undefined);
    const path = `/quickjs/runs/${id}/calls/1/heartbeat`;
    const forged = await completeOverHttp(h, path, { token: "x".repeat(43) });
    assert.equal(forged.status, 403, JSON.stringify(forged.json));
    assert.equal(forged.json.error.code, "COMPLETION_REFUSED");
    const tooBig = await completeOverHttp(h, path, { token, details: "x".repeat(70_000) });
    assert.equal(tooBig.status, 422, JSON.stringify(tooBig.json));
    const missing = await completeOverHttp(h, `/quickjs/runs/${id}/calls/9/heartbeat`, { token });
    assert.equal(missing.status, 404);

    const beat = await completeOverHttp(h, path, { token });
    assert.equal(beat.json.proceed, true);
    assert.equal(beat.json.call.heartbeatDeadlineAt, undefined, "no heartbeat deadline");
    h.clock.jumpTo(new Date(h.clock.now().getTime() + 3_000_000));
    await h.store.tick(h.clock.now());
    assert.equal((await callOf(h, id, 1)).awaiting, true, "quiet for 50 min: still waits");

    await h.store.cancelRun(id, { reason: "changed my mind", now: h.clock.now() });
    const after = await h.store.heartbeatCall({ runId: id, seq: 1, token }, h.clock.now());
    assert.equal(after.runStatus, "cancelled");
    assert.equal(after.proceed, false);
    assert.equal(after.alreadyCompleted, false);
  } finally {
    await service.close();
  }
});

test("a re-sent asynchronous call carries its last heartbeat's progress, so the service continues from there", async (db) => {
  let h: Harness | undefined;
  let runId = "";
  const service = await asyncService(db, {
    heartbeatTimeoutMs: 60_000,
    retry: { attempts: 2, initialDelayMs: 100, maxDelayMs: 100, jitter: 0 },
    before: async (r) => {
      if (r.attempt > 1) return;
      // the first send: progress, then the acknowledgement is lost (503), so it is re-sent
      await h!.store.heartbeatCall(
        { runId, seq: 1, token: r.completion.token, details: { chunk: 7 } },
        h!.clock.now(),
      );
      return new Response("busy", { status: 503 });
    },
  });
  try {
    h = engineFor(db);
    runId = await startWith(h, AWAIT_ONE, { svc: service.name });
    for (let n = 0; n < 20 && service.received.length < 2; n++) {
      if ((await h.engine.claimAndRun({ limit: 8 })).length === 0) {
        const next = await h.store.nextWakeAt(h.clock.now());
        assert.ok(next, "the retry is due at some point");
        h.clock.jumpTo(next);
      }
    }
    assert.equal(service.received.length, 2, "sent again after the lost acknowledgement");
    const [first, second] = service.received as [Received, Received];
    assert.equal(first.completion.lastHeartbeat, undefined);
    assert.deepEqual(second.completion.lastHeartbeat?.details, { chunk: 7 });
    assert.ok(second.completion.lastHeartbeat?.at);
    assert.notEqual(second.completion.token, first.completion.token);
    assert.equal(second.idempotencyKey, first.idempotencyKey, "the same key");
    const done = await h.store.completeCall({
      runId,
      seq: 1,
      token: second.completion.token,
      result: "transcoded",
    });
    assert.equal(done.status, "succeeded");
    const run = await runToEnd(h, runId);
    assert.deepEqual(run.result, { receipt: "transcoded" });
  } finally {
    await service.close();
  }
});
