/**
 * The service routes the platform calls: POST /quickjs/tick (pg_cron) and
 * POST /quickjs/runs/:id/resume (trigger, worker), with a clock the tests move.
 */
import assert from "node:assert/strict";
import { SignJWT } from "jose";
import { createApp } from "../../supabase/functions/quickjs/http/app.ts";
import { Engine, ToolRegistry } from "../../supabase/functions/_shared/quickjs/mod.ts";
import { FakeClock } from "../../supabase/functions/_shared/quickjs/dev.ts";
import { dbTests, type TestDb } from "../support/db.ts";

/** A response body as JSON, read field by field in assertions. */
// deno-lint-ignore no-explicit-any
type Body = any;

const { test } = dbTests("http ops");

const SERVICE_KEY = "ops-test-service-role-key";
const JWT_SECRET = "ops-test-jwt-secret-of-at-least-32-characters";
const TWO_HOURS = 2 * 3600_000;

const TASKS = {
  nap:
    `export default async function (input) { await sleep("2 hours"); return "rested " + input; }`,
  add: `export default async function (input) { return input.a + input.b; }`,
};

/** Every test leaves its runs final, so a tick in the next one sees only its own work. */
async function harness(db: TestDb) {
  for (const [name, code] of Object.entries(TASKS)) await db.store.publishTask({ name, code });
  const clock = new FakeClock(new Date());
  const background: Promise<unknown>[] = [];
  const engine = new Engine({
    store: db.store,
    tools: new ToolRegistry(db.store),
    workerId: "ops-test",
    clock,
  });
  const app = createApp({
    store: db.store,
    engine,
    auth: { serviceRoleKey: SERVICE_KEY, jwtSecret: JWT_SECRET },
    runInBackground: (work) => void background.push(work),
  });
  return { app, clock, background };
}

async function send(app: (r: Request) => Promise<Response>, path: string, options: {
  token?: string;
  body?: unknown;
} = {}): Promise<{ status: number; body: Body }> {
  const response = await app(
    new Request(`http://localhost${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${options.token ?? SERVICE_KEY}` },
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
    }),
  );
  return { status: response.status, body: await response.json() };
}

test("POST /quickjs/tick wakes a run whose sleep is due and runs it to the end", async (db) => {
  const { app, clock, background } = await harness(db);
  const started = await send(app, "/quickjs/runs", {
    body: { task: "nap", input: "bear", wait: 10_000 },
  });
  await Promise.all(background);
  assert.equal(started.body.run.status, "suspended");
  const id = started.body.run.id;

  const early = await send(app, "/quickjs/tick");
  assert.equal(early.status, 200);
  assert.deepEqual(early.body.tick, { requeued: 0, woken: 0, expired: 0 });
  assert.deepEqual(early.body.invocations, []);

  clock.advance(TWO_HOURS + 1_000);
  const due = await send(app, "/quickjs/tick", { body: {} });
  assert.equal(due.status, 200);
  assert.equal(due.body.tick.woken, 1);
  assert.deepEqual(due.body.invocations, [{ runId: id, task: "nap", status: "completed" }]);

  const run = await db.store.getRun(id);
  assert.equal(run?.status, "completed");
  assert.equal(run?.result, "rested bear");
});

test("POST /quickjs/tick runs queued work, at most `limit` runs at a time", async (db) => {
  const { app, clock } = await harness(db);
  const ids = new Set<string>();
  for (let i = 0; i < 3; i++) {
    const run = await db.store.enqueueRun({
      task: "add",
      input: { a: i, b: 10 },
      now: clock.now(),
    });
    ids.add(run.id);
  }
  const first = await send(app, "/quickjs/tick", { body: { limit: 2 } });
  assert.equal(first.status, 200);
  assert.equal(first.body.invocations.length, 2);
  const second = await send(app, "/quickjs/tick");
  assert.equal(second.body.invocations.length, 1);
  const ran = [...first.body.invocations, ...second.body.invocations];
  assert.deepEqual(new Set(ran.map((i: { runId: string }) => i.runId)), ids);
  assert.ok(ran.every((i: { status: string }) => i.status === "completed"));
});

test("POST /quickjs/runs/:id/resume runs a queued run for one invocation", async (db) => {
  const { app, clock } = await harness(db);
  const queued = await db.store.enqueueRun({
    task: "add",
    input: { a: 2, b: 3 },
    now: clock.now(),
  });
  const res = await send(app, `/quickjs/runs/${queued.id}/resume`, { body: {} });
  assert.equal(res.status, 200);
  assert.equal(res.body.run.id, queued.id);
  assert.equal(res.body.run.status, "completed");
  assert.equal(res.body.run.result, 5);
  assert.equal(res.body.invocation.runId, queued.id);
  assert.equal(res.body.invocation.status, "completed");
  assert.equal(res.body.invocation.result, 5);
});

test("resume of a run that is not due is 409 NOT_DUE naming its status", async (db) => {
  const { app, clock, background } = await harness(db);
  const started = await send(app, "/quickjs/runs", {
    body: { task: "nap", input: "owl", wait: 10_000 },
  });
  await Promise.all(background);
  const id = started.body.run.id;

  const early = await send(app, `/quickjs/runs/${id}/resume`);
  assert.equal(early.status, 409);
  assert.equal(early.body.error.code, "NOT_DUE");
  assert.match(early.body.error.message, /is suspended until/);

  clock.advance(TWO_HOURS + 1_000);
  const due = await send(app, `/quickjs/runs/${id}/resume`);
  assert.equal(due.status, 200);
  assert.equal(due.body.invocation.restored, true);
  assert.equal(due.body.run.status, "completed");
  assert.equal(due.body.run.result, "rested owl");

  const after = await send(app, `/quickjs/runs/${id}/resume`);
  assert.equal(after.status, 409);
  assert.equal(after.body.error.code, "NOT_DUE");
  assert.match(after.body.error.message, /is completed/);
});

test("resume of a run that does not exist is 404 RUN_NOT_FOUND", async (db) => {
  const { app } = await harness(db);
  const res = await send(app, `/quickjs/runs/${crypto.randomUUID()}/resume`);
  assert.equal(res.status, 404);
  assert.equal(res.body.error.code, "RUN_NOT_FOUND");
});

test("a user token on /tick and /resume is 403 FORBIDDEN and runs nothing", async (db) => {
  const { app, clock } = await harness(db);
  const user = await new SignJWT({ role: "authenticated" })
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(crypto.randomUUID())
    .setExpirationTime("1h")
    .sign(new TextEncoder().encode(JWT_SECRET));
  const queued = await db.store.enqueueRun({
    task: "add",
    input: { a: 1, b: 1 },
    now: clock.now(),
  });

  const tick = await send(app, "/quickjs/tick", { token: user });
  assert.equal(tick.status, 403);
  assert.equal(tick.body.error.code, "FORBIDDEN");
  const resume = await send(app, `/quickjs/runs/${queued.id}/resume`, { token: user });
  assert.equal(resume.status, 403);
  assert.equal(resume.body.error.code, "FORBIDDEN");
  assert.equal((await db.store.getRun(queued.id))?.status, "queued");

  // leave nothing due for the next test
  assert.equal((await send(app, `/quickjs/runs/${queued.id}/resume`)).status, 200);
});

test("resume of a run longer than the resume bound answers 202 with the run, which goes on to the end", async (db) => {
  // a tool that returns when the test says so: the invocation outlasts the bound
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let called!: () => void;
  const inCall = new Promise<void>((resolve) => (called = resolve));
  await db.store.publishTask({
    name: "long",
    code: `export default async function () { return await tools.slow.work(); }`,
  });
  const background: Promise<unknown>[] = [];
  const engine = new Engine({
    store: db.store,
    tools: new ToolRegistry(db.store, {
      custom: {
        slow: async () => {
          called();
          await released;
          return "finished";
        },
      },
    }),
    workerId: "ops-test-long",
  });
  const app = createApp({
    store: db.store,
    engine,
    auth: { serviceRoleKey: SERVICE_KEY },
    runInBackground: (work) => void background.push(work),
    resumeWaitMs: 1_500,
  });
  const queued = await db.store.enqueueRun({ task: "long", now: engine.clock.now() });

  const startedAt = Date.now();
  const res = await send(app, `/quickjs/runs/${queued.id}/resume`, { body: {} });
  const took = Date.now() - startedAt;
  await inCall;
  assert.equal(res.status, 202);
  assert.equal(res.body.run.id, queued.id);
  assert.equal(res.body.run.status, "running");
  assert.equal(res.body.invocation, null);
  assert.ok(took < 5_000, `answered within the bound (took ${took} ms)`);
  assert.equal(background.length, 1, "the invocation was handed to runInBackground");

  release();
  await Promise.all(background);
  const run = await db.store.getRun(queued.id);
  assert.equal(run?.status, "completed");
  assert.equal(run?.result, "finished");
});
