/**
 * The tools a task calls, through the real engine: errors a task can catch by code (unknown
 * service, tool not allowed, bad arguments), registered external services over HTTP, kv,
 * and child runs with their depth limit.
 */
import assert from "node:assert/strict";
import { dbTests } from "../support/db.ts";
import { harness, runTaskToEnd, runToEnd } from "../support/engine_harness.ts";
import {
  callOf,
  invokeAndCrash,
  json,
  type LocalServer,
  pause,
  serve,
  startWith,
  taskName,
} from "../support/engine_scenarios.ts";
import type { TestDb } from "../support/db.ts";

const { test } = dbTests("engine_tools");

/** Catches what `body` (an expression awaiting a call) throws: {code, name, message}. */
const catching = (body: string) =>
  `export default async function (input) {
    try {
      return { value: await ${body} };
    } catch (e) {
      return { code: e.code, name: e.name, message: e.message, isError: e instanceof Error };
    }
  }`;

test("a call to an unknown service fails with TOOL_NOT_FOUND, which the task can catch and read", async (db) => {
  const h = harness(db.store);
  const run = await runTaskToEnd(h, catching("tools.nosuchservice.do.thing({ a: 1 })"));
  assert.equal(run.status, "completed");
  const caught = run.result as Record<string, unknown>;
  assert.equal(caught.code, "TOOL_NOT_FOUND");
  assert.equal(caught.isError, true);
  assert.match(caught.message as string, /no tool or service named "nosuchservice"/);
  assert.match(caught.message as string, /quickjs\.services/);
  const id = h.invocations[0]!.runId;
  const call = await callOf(h, id, 1);
  assert.deepEqual([call.service, call.path, call.status], [
    "nosuchservice",
    ["do", "thing"],
    "failed",
  ]);
  assert.equal(call.error?.code, "TOOL_NOT_FOUND");
});

test("an unknown method of a built-in tool fails with TOOL_NOT_FOUND naming the methods it has", async (db) => {
  const h = harness(db.store);
  const run = await runTaskToEnd(h, catching('tools.kv.frobnicate("k")'));
  const caught = run.result as Record<string, unknown>;
  assert.equal(caught.code, "TOOL_NOT_FOUND");
  assert.match(caught.message as string, /get, set, delete/);
});

test("a task allowed only kv gets TOOL_NOT_ALLOWED from http and tasks, while kv, sleep and checkpoint work", async (db) => {
  let fetched = 0;
  const h = harness(db.store, {
    tools: {
      http: {
        allow: ["*"],
        resolve: () => Promise.resolve(["93.184.216.34"]),
        fetch: () => (fetched++, Promise.resolve(new Response("hi"))),
      },
    },
  });
  const key = taskName("allowed");
  const id = await startWith(
    h,
    `export default async function ({ key }) {
      const out = {};
      await tools.kv.set(key, { n: 1 });
      out.kv = await tools.kv.get(key);
      try { await tools.http.fetch("https://example.com/"); } catch (e) { out.http = [e.code, e.message]; }
      try { await tools.tasks.execute("anything", {}); } catch (e) { out.tasks = e.code; }
      await sleep(1);
      await sleep("1 hour");
      await checkpoint();
      out.slept = true;
      return out;
    }`,
    { key },
    { allowedTools: ["kv"] },
  );
  const run = await runToEnd(h, id);
  assert.equal(run.status, "completed", JSON.stringify(run.error));
  const out = run.result as { kv: unknown; http: [string, string]; tasks: string; slept: boolean };
  assert.deepEqual(out.kv, { n: 1 });
  assert.equal(out.http[0], "TOOL_NOT_ALLOWED");
  assert.match(out.http[1], /tools\.http.*allowed: kv/);
  assert.equal(out.tasks, "TOOL_NOT_ALLOWED");
  assert.equal(out.slept, true);
  assert.equal(fetched, 0, "nothing was fetched");
  assert.equal(run.suspensions, 2, "the long sleep and the checkpoint");
});

test("tasks.execute with a name that is not a task name fails with BAD_ARGUMENTS", async (db) => {
  const h = harness(db.store);
  for (const bad of ["42", '""', "null", '{ name: "x" }']) {
    const run = await runTaskToEnd(h, catching(`tools.tasks.execute(${bad}, {})`));
    const caught = run.result as Record<string, unknown>;
    assert.equal(caught.code, "BAD_ARGUMENTS", bad);
    assert.match(caught.message as string, /name must be a task name/);
  }
});

test("a sleep the duration parser refuses rejects the task's await with BAD_ARGUMENTS and the reason", async (db) => {
  const h = harness(db.store);
  const cases: [string, RegExp][] = [
    ['sleep("soon")', /sleep: cannot read the duration "soon"/],
    ['sleep("11 years")', /sleep: unknown time unit "years"/],
    ["sleep(-5)", /sleep: a duration must be a finite, non-negative time/],
    ['sleep("3651 days")', /sleep: a sleep may last ten years at most/],
    ["sleepUntil(new Date(Date.now() + 11 * 365 * 86400000))", /ten years at most/],
  ];
  for (const [call, message] of cases) {
    const run = await runTaskToEnd(h, catching(call));
    const caught = run.result as Record<string, unknown>;
    assert.equal(caught.code, "BAD_ARGUMENTS", call);
    assert.match(caught.message as string, message);
  }
});

test("kv.get, kv.set and kv.delete round-trip values, and delete says whether the key existed", async (db) => {
  const h = harness(db.store);
  const run = await runTaskToEnd(
    h,
    `export default async function ({ key }) {
      const missing = await tools.kv.get(key);
      const deletedMissing = await tools.kv.delete(key);
      await tools.kv.set(key, { list: [1, "two", null], nested: { ok: true } });
      const value = await tools.kv.get(key);
      await tools.kv.set(key, 3);
      const replaced = await tools.kv.get(key);
      const deleted = await tools.kv.delete(key);
      const gone = await tools.kv.get(key);
      let bad;
      try { await tools.kv.get(""); } catch (e) { bad = e.code; }
      return { missing, deletedMissing, value, replaced, deleted, gone, bad };
    }`,
    { key: taskName("kv") },
  );
  assert.deepEqual(run.result, {
    missing: null,
    deletedMissing: false,
    value: { list: [1, "two", null], nested: { ok: true } },
    replaced: 3,
    deleted: true,
    gone: null,
    bad: "BAD_ARGUMENTS",
  });
});

test("child runs nest: each level's result arrives in its parent's await", async (db) => {
  const h = harness(db.store);
  const name = taskName("nest");
  const id = await startWith(
    h,
    `export default async function (n, ctx) {
      if (n === 0) return ["leaf"];
      const below = await tools.tasks.execute(ctx.task, n - 1);
      return [n, ...below];
    }`,
    3,
    { name },
  );
  const run = await runToEnd(h, id);
  assert.equal(run.status, "completed");
  assert.deepEqual(run.result, [3, 2, 1, "leaf"]);
  const [row] = await db.query<{ n: number; depth: number }>(
    "select count(*)::int as n, max(depth) as depth from quickjs.runs where task_name = $1",
    [name],
  );
  assert.deepEqual({ ...row }, { n: 4, depth: 3 });
});

test("a task that starts itself recursively is stopped by the depth limit with CHILD_DEPTH_EXCEEDED", async (db) => {
  const h = harness(db.store, { maxChildDepth: 3 });
  const name = taskName("recurse");
  const id = await startWith(
    h,
    `export default async function (depth, ctx) {
      try {
        return await tools.tasks.execute(ctx.task, depth + 1);
      } catch (e) {
        return { stoppedAt: depth, code: e.code, message: e.message };
      }
    }`,
    0,
    { name },
  );
  const run = await runToEnd(h, id, { maxInvocations: 100 });
  assert.equal(run.status, "completed");
  assert.deepEqual(run.result, {
    stoppedAt: 3,
    code: "CHILD_DEPTH_EXCEEDED",
    message: "child runs may nest 3 deep",
  });
  const [row] = await db.query<{ n: number }>(
    "select count(*)::int as n from quickjs.runs where task_name = $1",
    [name],
  );
  assert.equal(row!.n, 4, "the top run and three levels of children, no more");
});

// ---- registered external services -----------------------------------------------------------

interface Received {
  headers: Headers;
  body: Record<string, unknown>;
}

/**
 * A local service: "a.b" answers {result}, "fail.me" a 422, "slow.one" after 3 s, and
 * "charge.card" calls `onCharge` first (a test crashes the worker there).
 */
function fakeService(
  onCharge: (n: number) => Promise<void> | void = () => {},
): LocalServer & { received: Received[] } {
  const received: Received[] = [];
  const server = serve(async (request, closing) => {
    const body = await request.json() as Record<string, unknown>;
    received.push({ headers: request.headers, body });
    switch (body.method) {
      case "charge.card":
        await onCharge(received.filter((r) => r.body.method === "charge.card").length);
        return json({ result: { charged: body.args } });
      case "a.b":
        return json({ result: { echoed: body.args, ok: true } });
      case "fail.me":
        return json({ error: { code: "OUT_OF_STOCK", message: "no more widgets" } }, 422);
      case "slow.one":
        await pause(3000, closing);
        return json({ result: "late" });
      default:
        return json({ error: { code: "NO_METHOD", message: `no method ${body.method}` } }, 404);
    }
  });
  return Object.assign(server, { received });
}

async function register(db: TestDb, url: string, timeoutMs = 5000): Promise<string> {
  const name = taskName("svc").replace(/[^A-Za-z0-9_-]/g, "_");
  await db.query("insert into quickjs.services (name, url, timeout_ms) values ($1, $2, $3)", [
    name,
    url,
    timeoutMs,
  ]);
  return name;
}

test("a registered service gets a POST of {method, args, runId, seq, attempt, idempotencyKey} and its {result} is the value", async (db) => {
  const service = fakeService();
  try {
    const name = await register(db, `${service.url}/rpc`);
    const h = harness(db.store);
    const id = await startWith(
      h,
      `export default async function ({ svc }) {
        await tools.kv.set("svc-warmup", 1);
        return await tools[svc].a.b({ widget: 7 }, "second arg");
      }`,
      { svc: name },
    );
    const run = await runToEnd(h, id);
    assert.equal(run.status, "completed", JSON.stringify(run.error));
    assert.deepEqual(run.result, { echoed: [{ widget: 7 }, "second arg"], ok: true });
    assert.equal(service.received.length, 1);
    const [{ headers, body }] = service.received as [Received];
    assert.deepEqual(body, {
      method: "a.b",
      args: [{ widget: 7 }, "second arg"],
      runId: id,
      seq: 2,
      attempt: 1,
      idempotencyKey: `${id}:2`,
    });
    assert.equal(headers.get("idempotency-key"), `${id}:2`);
    assert.equal(headers.get("content-type"), "application/json");
    const call = await callOf(h, id, 2);
    assert.deepEqual([call.service, call.path, call.status], [name, ["a", "b"], "succeeded"]);
  } finally {
    await service.close();
  }
});

test("a service's 422 {error: {code, message}} rejects the task's await with that code and message", async (db) => {
  const service = fakeService();
  try {
    const name = await register(db, service.url);
    const h = harness(db.store);
    const id = await startWith(h, catching("tools[input.svc].fail.me({ n: 1 })"), { svc: name });
    const run = await runToEnd(h, id);
    assert.equal(run.status, "completed");
    const caught = run.result as Record<string, unknown>;
    assert.equal(caught.code, "OUT_OF_STOCK");
    assert.equal(caught.message, "no more widgets");
    assert.equal(caught.isError, true);
    const call = await callOf(h, id, 1);
    assert.equal(call.status, "failed");
    assert.equal(call.error?.code, "OUT_OF_STOCK");
  } finally {
    await service.close();
  }
});

test("a service slower than its timeout_ms fails the call with SERVICE_TIMEOUT", async (db) => {
  const service = fakeService();
  try {
    const name = await register(db, service.url, 200);
    const h = harness(db.store);
    const started = performance.now();
    const id = await startWith(h, catching("tools[input.svc].slow.one()"), { svc: name });
    const run = await runToEnd(h, id);
    const elapsed = performance.now() - started;
    assert.equal(run.status, "completed");
    const caught = run.result as Record<string, unknown>;
    assert.equal(caught.code, "SERVICE_TIMEOUT");
    assert.match(caught.message as string, /no reply within 200 ms/);
    assert.ok(elapsed < 2500, `gave up after ${Math.round(elapsed)} ms, not at the 3 s reply`);
  } finally {
    await service.close();
  }
});

test("a service that cannot be reached fails the call with SERVICE_ERROR", async (db) => {
  const service = fakeService();
  const url = service.url;
  await service.close(); // nothing listens there any more
  const name = await register(db, url);
  const h = harness(db.store);
  const id = await startWith(h, catching("tools[input.svc].a.b()"), { svc: name });
  const run = await runToEnd(h, id);
  assert.equal((run.result as Record<string, unknown>).code, "SERVICE_ERROR");
});

test("a service call cut off by a crash is sent again with the same Idempotency-Key and attempt 2", async (db) => {
  const crash = new AbortController();
  let release: (() => void) | undefined;
  const service = fakeService(async (n) => {
    if (n === 1) {
      crash.abort(); // the worker dies while the service works on the first request
      await new Promise<void>((resolve) => (release = resolve));
    }
  });
  try {
    const name = await register(db, service.url);
    const h = harness(db.store);
    const id = await startWith(
      h,
      `export default async function ({ svc }) { return await tools[svc].charge.card(500); }`,
      { svc: name },
    );
    await invokeAndCrash(h, id, crash);
    const run = await runToEnd(h, id);
    assert.equal(run.status, "completed", JSON.stringify(run.error));
    assert.deepEqual(run.result, { charged: [500] });
    const [first, second] = service.received as [Received, Received];
    assert.equal(second.headers.get("idempotency-key"), `${id}:1`);
    assert.equal(first.headers.get("idempotency-key"), second.headers.get("idempotency-key"));
    assert.deepEqual([first.body.attempt, second.body.attempt], [1, 2]);
    assert.equal(first.body.idempotencyKey, second.body.idempotencyKey);
    assert.equal((await callOf(h, id, 1)).attempts, 2);
  } finally {
    release?.();
    await service.close();
  }
});
