/** What the HTTP app refuses before it does any work: oversized, malformed and invalid input. */
import assert from "node:assert/strict";
import { createApp } from "../../supabase/functions/quickjs/http/app.ts";
import { Engine, ToolRegistry } from "../../supabase/functions/_shared/quickjs/mod.ts";
import { dbTests, type TestDb } from "../support/db.ts";

/** A response body as JSON, read field by field in assertions. */
// deno-lint-ignore no-explicit-any
type Body = any;

const { test } = dbTests("http limits");

const SERVICE_KEY = "limits-test-service-role-key";
const MAX_BODY = 4096;
const MAX_WAIT = 5_000;

function harness(db: TestDb) {
  const background: Promise<unknown>[] = [];
  const engine = new Engine({
    store: db.store,
    tools: new ToolRegistry(db.store),
    workerId: "limits-test",
  });
  const app = createApp({
    store: db.store,
    engine,
    auth: { serviceRoleKey: SERVICE_KEY },
    maxBodyBytes: MAX_BODY,
    maxWaitMs: MAX_WAIT,
    runInBackground: (work) => void background.push(work),
  });
  return { app, background };
}

async function post(
  app: (r: Request) => Promise<Response>,
  path: string,
  body: BodyInit | null,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: Body }> {
  const response = await app(
    new Request(`http://localhost${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${SERVICE_KEY}`, ...headers },
      body,
    }),
  );
  return { status: response.status, body: await response.json() };
}

/** A body of `size` bytes in 512-byte chunks without a Content-Length; counts chunks read. */
function chunked(size: number) {
  const chunk = new TextEncoder().encode(" ".repeat(512));
  const stats = { pulled: 0, total: Math.ceil(size / chunk.byteLength) };
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (stats.pulled === stats.total) return controller.close();
      stats.pulled++;
      controller.enqueue(chunk);
    },
  });
  return { stream, stats };
}

test("a body whose Content-Length is over the limit is 413 PAYLOAD_TOO_LARGE", async (db) => {
  const { app, background } = harness(db);
  const res = await post(app, "/quickjs/runs", JSON.stringify({ task: "x" }), {
    "content-length": String(MAX_BODY + 1),
  });
  assert.equal(res.status, 413);
  assert.equal(res.body.error.code, "PAYLOAD_TOO_LARGE");
  assert.equal(background.length, 0);
});

test("a chunked body over the limit is 413 and is not read to its end", async (db) => {
  const { app } = harness(db);
  const { stream, stats } = chunked(64 * 1024);
  const res = await post(app, "/quickjs/runs", stream);
  assert.equal(res.status, 413);
  assert.equal(res.body.error.code, "PAYLOAD_TOO_LARGE");
  assert.ok(stats.pulled < stats.total / 2, `read ${stats.pulled} of ${stats.total} chunks`);
});

test("a chunked body under the limit is read", async (db) => {
  const { app } = harness(db);
  const { stream } = chunked(MAX_BODY - 600); // whitespace only: an empty body
  const res = await post(app, "/quickjs/tick", stream);
  assert.equal(res.status, 200);
  assert.deepEqual(res.body.invocations, []);
});

test("malformed JSON is 400 BAD_JSON", async (db) => {
  const { app } = harness(db);
  for (const body of ['{"task": "x",', "{task: 'x'}", "\xff"]) {
    const res = await post(app, "/quickjs/runs", body);
    assert.equal(res.status, 400, body);
    assert.equal(res.body.error.code, "BAD_JSON");
  }
  const invalidUtf8 = await post(app, "/quickjs/runs", new Uint8Array([0x7b, 0xff, 0x7d]));
  assert.equal(invalidUtf8.status, 400);
  assert.equal(invalidUtf8.body.error.code, "BAD_JSON");
});

test("a body that breaks the schema is 422 VALIDATION_FAILED naming the fields", async (db) => {
  const { app, background } = harness(db);
  const cases: [unknown, RegExp][] = [
    [{ task: 5, wait: -1 }, /task: .*wait: /],
    [{ task: "a", taskId: crypto.randomUUID() }, /task: give task or taskId, not both/],
    [{ input: 1 }, /task: task or taskId is required/],
    [{ taskId: "not-a-uuid" }, /taskId: must be a uuid/],
    [{ task: "a", wait: MAX_WAIT + 1 }, /wait: /],
    [{ task: "a", wait: 1.5 }, /wait: /],
    [{ task: "a", idempotencyKey: "" }, /idempotencyKey: /],
    [{ task: "a", idempotencyKey: "k".repeat(201) }, /idempotencyKey: /],
    [{ task: "a", tsk: "b" }, /body: .*tsk/],
    [[], /body: /],
    [null, /body: /],
  ];
  for (const [body, message] of cases) {
    const res = await post(app, "/quickjs/runs", JSON.stringify(body));
    assert.equal(res.status, 422, JSON.stringify(body));
    assert.equal(res.body.error.code, "VALIDATION_FAILED");
    assert.match(res.body.error.message, message);
  }
  const empty = await post(app, "/quickjs/runs", null);
  assert.equal(empty.status, 422);
  assert.match(empty.body.error.message, /a JSON object is required/);
  assert.equal(background.length, 0);
});

test("the optional bodies of cancel and tick are validated too", async (db) => {
  const { app } = harness(db);
  const cancel = await post(
    app,
    `/quickjs/runs/${crypto.randomUUID()}/cancel`,
    JSON.stringify({ reason: 42 }),
  );
  assert.equal(cancel.status, 422);
  assert.match(cancel.body.error.message, /reason: /);
  for (const limit of [0, 51, "3"]) {
    const tick = await post(app, "/quickjs/tick", JSON.stringify({ limit }));
    assert.equal(tick.status, 422, String(limit));
    assert.match(tick.body.error.message, /limit: /);
  }
  const resume = await post(
    app,
    `/quickjs/runs/${crypto.randomUUID()}/resume`,
    JSON.stringify({ now: 1 }),
  );
  assert.equal(resume.status, 422);
  assert.match(resume.body.error.message, /now/);
});

test("a run id that is not a uuid is 422 VALIDATION_FAILED", async (db) => {
  const { app } = harness(db);
  const requests = [
    new Request("http://localhost/quickjs/runs/1234", {
      headers: { authorization: `Bearer ${SERVICE_KEY}` },
    }),
    new Request("http://localhost/quickjs/runs/1234/cancel", {
      method: "POST",
      headers: { authorization: `Bearer ${SERVICE_KEY}` },
    }),
    new Request("http://localhost/quickjs/runs/1234/resume", {
      method: "POST",
      headers: { authorization: `Bearer ${SERVICE_KEY}` },
    }),
  ];
  for (const request of requests) {
    const response = await app(request);
    const body = await response.json();
    assert.equal(response.status, 422, request.url);
    assert.equal(body.error.code, "VALIDATION_FAILED");
    assert.match(body.error.message, /id: must be a uuid/);
  }
});
