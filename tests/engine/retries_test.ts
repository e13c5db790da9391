/**
 * Retries of a registered service's calls (quickjs.services.retry): a service that fails N
 * times and then answers, with short backoffs in the process and long ones across a
 * suspension, 4xx answers that do not retry, and a crash between attempts that neither
 * repeats the failed attempt nor skips the backoff.
 */
import assert from "node:assert/strict";
import { dbTests, type TestDb } from "../support/db.ts";
import { harness, runToEnd } from "../support/engine_harness.ts";
import {
  callOf,
  deferred,
  invokeAndCrash,
  json,
  type LocalServer,
  logsOf,
  serve,
  startWith,
  taskName,
} from "../support/engine_scenarios.ts";
import { retryDelayMs } from "../../supabase/functions/_shared/quickjs/engine/retry.ts";

const { test } = dbTests("engine_retries");

interface Seen {
  attempt: number;
  key: string;
}

/** A service that answers `status` to its first `failures` requests, then {result: "ok"}. */
function flakyService(failures: number, status = 500): LocalServer & { seen: Seen[] } {
  const seen: Seen[] = [];
  const server = serve(async (request) => {
    const body = await request.json() as { attempt: number; idempotencyKey: string };
    seen.push({ attempt: body.attempt, key: body.idempotencyKey });
    if (seen.length <= failures) {
      return json({ error: { message: `failure ${seen.length}` } }, status);
    }
    return json({ result: "ok" });
  });
  return Object.assign(server, { seen });
}

async function register(
  db: TestDb,
  url: string,
  retry: unknown,
  timeoutMs = 5000,
): Promise<string> {
  const name = taskName("svc").replace(/[^A-Za-z0-9_-]/g, "_");
  await db.query(
    "insert into quickjs.services (name, url, timeout_ms, retry) values ($1, $2, $3, $4::text::jsonb)",
    [
      name,
      url,
      timeoutMs,
      retry === null ? null : JSON.stringify(retry),
    ],
  );
  return name;
}

const callIt = `export default async function ({ svc }) {
  try {
    return { value: await tools[svc].do.it(1) };
  } catch (e) {
    return { code: e.code, message: e.message };
  }
}`;

test("a service that answers 500 twice is retried with a short backoff in the process and the third attempt's value is the result", async (db) => {
  const service = flakyService(2);
  try {
    const name = await register(db, service.url, { attempts: 4, initialDelayMs: 20, jitter: 0 });
    const h = harness(db.store);
    const id = await startWith(h, callIt, { svc: name });
    const run = await runToEnd(h, id);
    assert.equal(run.status, "completed", JSON.stringify(run.error));
    assert.deepEqual(run.result, { value: "ok" });
    assert.equal(h.invocations.length, 1, "short backoffs wait in the process");
    assert.deepEqual(service.seen.map((s) => s.attempt), [1, 2, 3]);
    assert.deepEqual(new Set(service.seen.map((s) => s.key)), new Set([`${id}:1`]));
    const call = await callOf(h, id, 1);
    assert.equal(call.status, "succeeded");
    assert.equal(call.attempts, 3);
    // the two failed attempts stay in the entry, not only in the log
    assert.deepEqual(
      call.attemptErrors?.map((a) => [a.attempt, a.error.code, a.error.message]),
      [[1, "SERVICE_ERROR", "failure 1"], [2, "SERVICE_ERROR", "failure 2"]],
    );
    assert.equal(call.error, undefined, "a succeeded call has no error of its own");
    assert.equal(logsOf(run, "system").filter((m) => /attempt \d of 4 failed/.test(m)).length, 2);
  } finally {
    await service.close();
  }
});

test("a long backoff suspends the run until the next attempt is due, then the call is sent again", async (db) => {
  const service = flakyService(1);
  try {
    const name = await register(db, service.url, {
      attempts: 3,
      initialDelayMs: 60_000,
      jitter: 0,
    });
    const h = harness(db.store);
    const id = await startWith(h, callIt, { svc: name });
    const before = h.clock.now().getTime();
    const run = await runToEnd(h, id);
    assert.equal(run.status, "completed", JSON.stringify(run.error));
    assert.deepEqual(run.result, { value: "ok" });
    assert.equal(h.invocations[0]!.status, "suspended");
    assert.ok(Date.parse(h.invocations[0]!.wakeAt!) - before >= 60_000);
    assert.deepEqual(service.seen.map((s) => s.attempt), [1, 2]);
    assert.equal((await callOf(h, id, 1)).attempts, 2);
  } finally {
    await service.close();
  }
});

test("a service that fails more often than the policy allows fails the call with the last attempt's error", async (db) => {
  const service = flakyService(10, 503);
  try {
    const name = await register(db, service.url, { attempts: 3, initialDelayMs: 5, jitter: 0 });
    const h = harness(db.store);
    const id = await startWith(h, callIt, { svc: name });
    const run = await runToEnd(h, id);
    assert.deepEqual(run.result, { code: "SERVICE_ERROR", message: "failure 3" });
    assert.equal(service.seen.length, 3);
    assert.ok(logsOf(run, "system").includes("call 1 failed after 3 attempts"));
  } finally {
    await service.close();
  }
});

test("a 4xx answer is the service's answer and is not retried; a service without a policy is tried once", async (db) => {
  const client = flakyService(10, 422);
  const plain = flakyService(10, 500);
  try {
    const h = harness(db.store);
    const withPolicy = await register(db, client.url, { attempts: 5, initialDelayMs: 5 });
    const without = await register(db, plain.url, null);
    const a = await runToEnd(h, await startWith(h, callIt, { svc: withPolicy }));
    const b = await runToEnd(h, await startWith(h, callIt, { svc: without }));
    assert.equal((a.result as { code: string }).code, "SERVICE_ERROR");
    assert.equal((b.result as { code: string }).code, "SERVICE_ERROR");
    assert.equal(client.seen.length, 1);
    assert.equal(plain.seen.length, 1);
  } finally {
    await client.close();
    await plain.close();
  }
});

test("a crash during the backoff neither runs the failed attempt again nor sends the next one early", async (db) => {
  const failed = deferred();
  const service = flakyService(1);
  try {
    const name = await register(db, service.url, {
      attempts: 3,
      initialDelayMs: 60_000,
      jitter: 0,
    });
    // this worker waits out even a minute's backoff in the process; it dies during it
    const h = harness(db.store, { inlineSleepMaxMs: 100_000 });
    const id = await startWith(h, callIt, { svc: name });
    const crash = new AbortController();
    const watch = setInterval(async () => {
      const call = (await h.store.listCalls(id))[0];
      if (call?.status === "pending" && call.error) {
        clearInterval(watch);
        failed.resolve();
        crash.abort();
      }
    }, 10);
    await invokeAndCrash(h, id, crash);
    await failed.promise;
    assert.equal(service.seen.length, 1);
    const pending = await callOf(h, id, 1);
    assert.equal(pending.attempts, 1);
    assert.ok(Date.parse(pending.wakeAt!) > h.clock.now().getTime(), "the lease ended first");
    // the next worker comes before the backoff ends: it parks the run until then, unsent
    const next = harness(db.store, { clock: h.clock });
    const [first] = await next.engine.claimAndRun({ runId: id });
    assert.equal(first!.status, "suspended");
    assert.equal(first!.wakeAt, pending.wakeAt);
    assert.equal(service.seen.length, 1);
    const run = await runToEnd(next, id);
    assert.equal(run.status, "completed", JSON.stringify(run.error));
    assert.deepEqual(run.result, { value: "ok" });
    assert.deepEqual(service.seen.map((s) => s.attempt), [1, 2], "attempt 1 once, then 2");
    assert.equal((await callOf(h, id, 1)).attempts, 2);
  } finally {
    await service.close();
  }
});

Deno.test("retry delays grow by the multiplier up to the maximum, spread by the jitter", () => {
  const policy = {
    attempts: 10,
    initialDelayMs: 1000,
    maxDelayMs: 5000,
    multiplier: 2,
    jitter: 0.5,
    codes: [],
  };
  const mid = () => 0.5;
  assert.deepEqual([1, 2, 3, 4, 5].map((n) => retryDelayMs(policy, n, mid)), [
    1000,
    2000,
    4000,
    5000,
    5000,
  ]);
  assert.equal(retryDelayMs(policy, 1, () => 0), 500);
  assert.equal(retryDelayMs(policy, 2, () => 0.999999), 3000);
});

test("a service whose timeout_ms exceeds the invocation budget is refused, not re-sent forever", async (db) => {
  const service = flakyService(0);
  try {
    // 5 min: longer than any invocation may run (140 s), with or without a retry policy
    const name = await register(db, service.url, { attempts: 3 }, 300_000);
    const h = harness(db.store);
    const id = await startWith(h, callIt, { svc: name });
    const run = await runToEnd(h, id);
    assert.equal(run.status, "completed", JSON.stringify(run.error));
    const result = run.result as { code: string; message: string };
    assert.equal(result.code, "TIMEOUT_OVER_BUDGET");
    assert.match(result.message, /300000 ms\) is longer than an invocation may run \(140000 ms\)/);
    assert.match(result.message, /timeout_ms/);
    assert.equal(service.seen.length, 0, "never sent");
    assert.equal(h.invocations.length, 1, "refused at once, not deferred to the next invocation");
    const call = await callOf(h, id, 1);
    assert.equal(call.status, "failed");
    assert.equal(call.error?.code, "TIMEOUT_OVER_BUDGET");

    // a smaller budget counts the same way: 5 s does not fit in 2 s
    const small = await register(db, service.url, null, 5_000);
    const h2 = harness(db.store, { budget: { wallMs: 2_000 } });
    const id2 = await startWith(h2, callIt, { svc: small });
    const run2 = await runToEnd(h2, id2);
    assert.equal((run2.result as { code: string }).code, "TIMEOUT_OVER_BUDGET");
    assert.equal(service.seen.length, 0);
  } finally {
    await service.close();
  }
});
