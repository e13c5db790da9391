/** The run routes of the HTTP app against a real database and the real engine. */
import assert from "node:assert/strict";
import { SignJWT } from "jose";
import { type AppDeps, createApp } from "../../supabase/functions/quickjs/http/app.ts";
import { Engine, ToolRegistry } from "../../supabase/functions/_shared/quickjs/mod.ts";
import { dbTests, type TestDb } from "../support/db.ts";

/** A response body as JSON, read field by field in assertions. */
// deno-lint-ignore no-explicit-any
type Body = any;

const { test } = dbTests("http routes");

const SERVICE_KEY = "routes-test-service-role-key";
const JWT_SECRET = "routes-test-jwt-secret-of-at-least-32-chars";

const TASKS = {
  double: `export default async function (input) {
    await sleep(10);
    console.log("doubling", input.n);
    return input.n * 2;
  }`,
  nap: `export default async function (input) { await sleep("2 hours"); return "rested"; }`,
};

async function publish(db: TestDb) {
  const published: Record<string, string> = {};
  for (const [name, code] of Object.entries(TASKS)) {
    published[name] = (await db.store.publishTask({ name, code })).id;
  }
  return published;
}

/** The app over this file's database; background executions are kept to be awaited. */
function harness(db: TestDb, options: Partial<AppDeps> = {}) {
  const background: Promise<unknown>[] = [];
  const engine = new Engine({
    store: db.store,
    tools: new ToolRegistry(db.store),
    workerId: "routes-test",
  });
  const app = createApp({
    store: db.store,
    engine,
    auth: { serviceRoleKey: SERVICE_KEY, jwtSecret: JWT_SECRET },
    runInBackground: (work) => void background.push(work),
    ...options,
  });
  return { app, background };
}

type App = (request: Request) => Promise<Response>;

async function send(app: App, method: string, path: string, options: {
  token?: string | null;
  body?: unknown;
} = {}): Promise<{ status: number; headers: Headers; body: Body }> {
  const headers = new Headers();
  const token = options.token === undefined ? SERVICE_KEY : options.token;
  if (token !== null) headers.set("authorization", `Bearer ${token}`);
  const response = await app(
    new Request(`http://localhost${path}`, {
      method,
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
    }),
  );
  const text = await response.text();
  return {
    status: response.status,
    headers: response.headers,
    body: text ? JSON.parse(text) : null,
  };
}

function userToken(sub: string): Promise<string> {
  return new SignJWT({ role: "authenticated" })
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(sub)
    .setIssuedAt()
    .setExpirationTime("1h")
    .sign(new TextEncoder().encode(JWT_SECRET));
}

test("POST /quickjs/runs with wait answers 200 with the result of a quick task", async (db) => {
  await publish(db);
  // the default runInBackground: this request itself is the executor
  const { app } = harness(db, { runInBackground: undefined });
  const res = await send(app, "POST", "/quickjs/runs", {
    body: { task: "double", input: { n: 21 }, wait: 10_000 },
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "application/json");
  assert.equal(res.body.created, true);
  assert.equal(res.body.run.status, "completed");
  assert.equal(res.body.run.result, 42);
  assert.deepEqual(res.body.run.input, { n: 21 });
  assert.equal(res.body.run.ownerId, undefined);
  assert.ok(res.body.run.logs.some((l: { message: string }) => l.message === "doubling 21"));
});

test("POST /quickjs/runs without wait answers 202 and runs the task in the background", async (db) => {
  await publish(db);
  const { app, background } = harness(db);
  const res = await send(app, "POST", "/quickjs/runs", {
    body: { task: "double", input: { n: 5 } },
  });
  assert.equal(res.status, 202);
  assert.ok(["queued", "running"].includes(res.body.run.status), res.body.run.status);
  assert.equal(background.length, 1);
  await Promise.all(background);
  const after = await send(app, "GET", `/quickjs/runs/${res.body.run.id}`);
  assert.equal(after.status, 200);
  assert.equal(after.body.run.status, "completed");
  assert.equal(after.body.run.result, 10);
});

test("POST /quickjs/runs answers 202 at once for a task that sleeps 2 hours", async (db) => {
  await publish(db);
  const { app, background } = harness(db);
  const started = performance.now();
  const res = await send(app, "POST", "/quickjs/runs", { body: { task: "nap", wait: 20_000 } });
  const elapsed = performance.now() - started;
  await Promise.all(background);
  assert.equal(res.status, 202);
  assert.equal(res.body.run.status, "suspended");
  assert.ok(Date.parse(res.body.run.wakeAt) > Date.now() + 3_600_000, res.body.run.wakeAt);
  // a suspended run will not end within the wait, so the request does not sit it out
  assert.ok(elapsed < 10_000, `took ${elapsed} ms`);
});

test("POST /quickjs/runs starts a task by id, also under /functions/v1", async (db) => {
  const ids = await publish(db);
  const { app, background } = harness(db);
  const res = await send(app, "POST", "/functions/v1/quickjs/runs", {
    body: { taskId: ids.double, input: { n: 1 }, wait: 10_000 },
  });
  await Promise.all(background);
  assert.equal(res.status, 200);
  assert.equal(res.body.run.task, "double");
  assert.equal(res.body.run.taskId, ids.double);
  assert.equal(res.body.run.result, 2);
});

test("an idempotency key returns the same run for the same input and 409 for another", async (db) => {
  await publish(db);
  const { app, background } = harness(db);
  const body = { task: "double", input: { n: 3 }, idempotencyKey: "order-17" };
  const first = await send(app, "POST", "/quickjs/runs", { body });
  const again = await send(app, "POST", "/quickjs/runs", { body: { ...body, wait: 10_000 } });
  assert.equal(first.status, 202);
  assert.equal(first.body.created, true);
  assert.equal(again.body.created, false);
  assert.equal(again.body.run.id, first.body.run.id);
  // only the request that created the run executes it; the retry waited for its result
  assert.equal(background.length, 1);
  assert.equal(again.status, 200);
  assert.equal(again.body.run.result, 6);

  const conflict = await send(app, "POST", "/quickjs/runs", {
    body: { ...body, input: { n: 4 } },
  });
  assert.equal(conflict.status, 409);
  assert.equal(conflict.body.error.code, "IDEMPOTENCY_CONFLICT");
  assert.equal(background.length, 1);
});

test("a user who POSTs another user's idempotency key gets a run of their own; no answer names the other's run", async (db) => {
  await publish(db);
  const { app, background } = harness(db);
  const key = `order-${crypto.randomUUID().slice(0, 8)}`;
  const victim = await send(app, "POST", "/quickjs/runs", {
    token: await userToken(crypto.randomUUID()),
    body: { task: "nap", input: { who: "victim" }, idempotencyKey: key },
  });
  assert.equal(victim.body.created, true);
  const attackerToken = await userToken(crypto.randomUUID());
  for (const input of [{ who: "victim" }, { who: "attacker" }]) {
    const res = await send(app, "POST", "/quickjs/runs", {
      token: attackerToken,
      body: { task: "nap", input, idempotencyKey: key },
    });
    assert.ok(!JSON.stringify(res.body).includes(victim.body.run.id), JSON.stringify(res.body));
    if (input.who === "victim") assert.equal(res.body.created, true, "the attacker's own run");
    else {
      // the same key with another input: a conflict with the attacker's own run only
      assert.equal(res.status, 409);
      assert.equal(res.body.error.code, "IDEMPOTENCY_CONFLICT");
    }
  }
  // the runs it started execute in the background (and suspend): they end in this test
  await Promise.all(background);
});

test("a user's run is the user's: others get 404 RUN_NOT_FOUND, the service role sees it", async (db) => {
  await publish(db);
  const { app, background } = harness(db);
  const alice = crypto.randomUUID();
  const aliceToken = await userToken(alice);
  const bobToken = await userToken(crypto.randomUUID());
  const started = await send(app, "POST", "/quickjs/runs", {
    token: aliceToken,
    body: { task: "double", input: { n: 2 }, wait: 10_000 },
  });
  await Promise.all(background);
  assert.equal(started.status, 200);
  assert.equal(started.body.run.ownerId, alice);
  const id = started.body.run.id;

  const own = await send(app, "GET", `/quickjs/runs/${id}`, { token: aliceToken });
  assert.equal(own.status, 200);
  assert.equal(own.body.run.result, 4);

  const other = await send(app, "GET", `/quickjs/runs/${id}`, { token: bobToken });
  assert.equal(other.status, 404);
  assert.equal(other.body.error.code, "RUN_NOT_FOUND");

  const cancelByOther = await send(app, "POST", `/quickjs/runs/${id}/cancel`, {
    token: bobToken,
  });
  assert.equal(cancelByOther.status, 404);
  assert.equal(cancelByOther.body.error.code, "RUN_NOT_FOUND");

  const service = await send(app, "GET", `/quickjs/runs/${id}`);
  assert.equal(service.status, 200);
  assert.equal(service.body.run.ownerId, alice);
});

test("GET of a run that does not exist is 404 RUN_NOT_FOUND", async (db) => {
  const { app } = harness(db);
  const res = await send(app, "GET", `/quickjs/runs/${crypto.randomUUID()}`);
  assert.equal(res.status, 404);
  assert.deepEqual(Object.keys(res.body.error).sort(), ["code", "message"]);
  assert.equal(res.body.error.code, "RUN_NOT_FOUND");
});

test("POST /quickjs/runs of a task that does not exist is 404 TASK_NOT_FOUND", async (db) => {
  const { app, background } = harness(db);
  const byName = await send(app, "POST", "/quickjs/runs", { body: { task: "no-such-task" } });
  assert.equal(byName.status, 404);
  assert.equal(byName.body.error.code, "TASK_NOT_FOUND");
  const byId = await send(app, "POST", "/quickjs/runs", {
    body: { taskId: crypto.randomUUID() },
  });
  assert.equal(byId.status, 404);
  assert.equal(byId.body.error.code, "TASK_NOT_FOUND");
  assert.equal(background.length, 0);
});

test("cancel ends a suspended run with the reason, and GET shows it cancelled", async (db) => {
  await publish(db);
  const { app, background } = harness(db);
  const user = await userToken(crypto.randomUUID());
  const started = await send(app, "POST", "/quickjs/runs", {
    token: user,
    body: { task: "nap", wait: 10_000 },
  });
  await Promise.all(background);
  assert.equal(started.body.run.status, "suspended");
  const id = started.body.run.id;

  const cancelled = await send(app, "POST", `/quickjs/runs/${id}/cancel`, {
    token: user,
    body: { reason: "no longer needed" },
  });
  assert.equal(cancelled.status, 200);
  assert.equal(cancelled.body.run.status, "cancelled");
  assert.equal(cancelled.body.run.cancelled, true);
  assert.equal(cancelled.body.run.error.code, "CANCELLED");
  assert.equal(cancelled.body.run.error.message, "no longer needed");

  const read = await send(app, "GET", `/quickjs/runs/${id}`, { token: user });
  assert.equal(read.status, 200);
  assert.equal(read.body.run.status, "cancelled");
  assert.equal(read.body.run.error.message, "no longer needed");

  // cancelling again (without a body) changes nothing
  const again = await send(app, "POST", `/quickjs/runs/${id}/cancel`, { token: user });
  assert.equal(again.status, 200);
  assert.equal(again.body.run.status, "cancelled");
  assert.equal(again.body.run.cancelled, false);
});

test("cancel of a run that does not exist is 404 RUN_NOT_FOUND", async (db) => {
  const { app } = harness(db);
  const res = await send(app, "POST", `/quickjs/runs/${crypto.randomUUID()}/cancel`, {
    body: {},
  });
  assert.equal(res.status, 404);
  assert.equal(res.body.error.code, "RUN_NOT_FOUND");
});

test("the default background runner hands the execution to EdgeRuntime.waitUntil", async (db) => {
  await publish(db);
  const handed: Promise<unknown>[] = [];
  const global = globalThis as { EdgeRuntime?: unknown };
  global.EdgeRuntime = { waitUntil: (work: Promise<unknown>) => void handed.push(work) };
  try {
    const { app } = harness(db, { runInBackground: undefined });
    const res = await send(app, "POST", "/quickjs/runs", {
      body: { task: "double", input: { n: 8 } },
    });
    assert.equal(res.status, 202);
    assert.equal(handed.length, 1);
    await Promise.all(handed);
    const after = await send(app, "GET", `/quickjs/runs/${res.body.run.id}`);
    assert.equal(after.body.run.result, 16);
  } finally {
    delete global.EdgeRuntime;
  }
});

test("POST /runs with U+0000 or a lone surrogate in the input is 422 VALUE_NOT_STORABLE, not 500", async (db) => {
  const { app } = harness(db);
  await db.store.publishTask({ name: "unstorable_input", code: "export default (x) => x" });
  for (const input of ["a\u0000b", "x\ud800y", { ["k\u0000"]: 1 }]) {
    const res = await send(app, "POST", "/quickjs/runs", {
      body: { task: "unstorable_input", input },
    });
    assert.equal(res.status, 422, JSON.stringify(input));
    assert.equal((res.body as { error: { code: string } }).error.code, "VALUE_NOT_STORABLE");
  }
});
