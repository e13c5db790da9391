/**
 * Requests an attacker's fuzzer sent, each answered with a 4xx and a stable code instead of a
 * 500: deep nesting, strings Postgres cannot hold, broken, stalled and abandoned bodies, odd
 * paths and numbers. In-process through createApp, and over TCP through a real Deno.serve
 * for what only a socket can send.
 */
import assert from "node:assert/strict";
import { createApp } from "../../supabase/functions/quickjs/http/app.ts";
import { MAX_JSON_DEPTH } from "../../supabase/functions/quickjs/http/body.ts";
import { Engine, type Store, ToolRegistry } from "../../supabase/functions/_shared/quickjs/mod.ts";
import { dbTests, type TestDb } from "../support/db.ts";
import { captureErrors, internalErrors, rawRequest, serveApp } from "./raw_http.ts";

// deno-lint-ignore no-explicit-any
type Body = any;

const { test } = dbTests("http hostile");

const SERVICE_KEY = "hostile-test-service-role-key";
const AUTH = `Bearer ${SERVICE_KEY}`;
const BODY_TIMEOUT_MS = 300;

/** A store that fails the test's request with a 500 if the named operations are reached. */
function guarded(store: Store, forbidden: string[]): Store {
  return new Proxy(store, {
    get(target, key, receiver) {
      if (typeof key === "string" && forbidden.includes(key)) {
        return () => Promise.reject(new Error(`the request reached the database (${key})`));
      }
      const value = Reflect.get(target, key, receiver);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

function harness(db: TestDb, options: { store?: Store } = {}) {
  const background: Promise<unknown>[] = [];
  const store = options.store ?? db.store;
  const engine = new Engine({
    store: db.store,
    tools: new ToolRegistry(db.store),
    workerId: "hostile-test",
  });
  const app = createApp({
    store,
    engine,
    auth: { serviceRoleKey: SERVICE_KEY },
    bodyTimeoutMs: BODY_TIMEOUT_MS,
    runInBackground: (work) => void background.push(work),
  });
  return { app, background };
}

type App = (request: Request) => Promise<Response>;

async function send(
  app: App,
  method: string,
  path: string,
  body?: BodyInit | null,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: Body }> {
  const response = await app(
    new Request(`http://localhost${path}`, {
      method,
      headers: { authorization: AUTH, ...headers },
      body,
      // a stream body needs this in Request's constructor
      ...(body instanceof ReadableStream ? { duplex: "half" } : {}),
    } as RequestInit),
  );
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

function nested(depth: number, leaf = "0"): string {
  return "[".repeat(depth) + leaf + "]".repeat(depth);
}

async function publishEcho(db: TestDb): Promise<void> {
  await db.store.publishTask({ name: "hostile_echo", code: "export default (input) => input" });
}

async function runCount(db: TestDb): Promise<number> {
  const [row] = await db.query<{ n: number }>("select count(*)::int as n from quickjs.runs");
  return row!.n;
}

test("a body nested 100,000 levels deep is 400 JSON_TOO_DEEP on every route, not a stack overflow", async (db) => {
  const { app } = harness(db, { store: guarded(db.store, ["enqueueRun", "cancelRun", "tick"]) });
  const deep = nested(100_000);
  const id = crypto.randomUUID();
  for (
    const [path, body] of [
      ["/quickjs/runs", `{"task":"hostile_echo","input":${deep}}`],
      ["/quickjs/runs", deep],
      [`/quickjs/runs/${id}/cancel`, `{"reason":${deep}}`],
      [`/quickjs/runs/${id}/resume`, deep],
      ["/quickjs/tick", `{"limit":${'{"a":'.repeat(50_000)}1${"}".repeat(50_000)}}`],
    ]
  ) {
    const res = await send(app, "POST", path!, body);
    assert.equal(res.status, 400, path);
    assert.equal(res.body.error.code, "JSON_TOO_DEEP", path);
  }
});

test(`an input nested ${MAX_JSON_DEPTH - 1} levels is accepted and one level more is 400 JSON_TOO_DEEP`, async (db) => {
  await publishEcho(db);
  const { app, background } = harness(db);
  // the body itself is one level: {"task", "input": …}
  const fits = await send(
    app,
    "POST",
    "/quickjs/runs",
    `{"task":"hostile_echo","input":${nested(MAX_JSON_DEPTH - 1)},"wait":5000}`,
  );
  assert.equal(fits.status, 200, JSON.stringify(fits.body));
  assert.deepEqual(fits.body.run.result, JSON.parse(nested(MAX_JSON_DEPTH - 1)));
  const over = await send(
    app,
    "POST",
    "/quickjs/runs",
    `{"task":"hostile_echo","input":${nested(MAX_JSON_DEPTH)}}`,
  );
  assert.equal(over.status, 400);
  assert.equal(over.body.error.code, "JSON_TOO_DEEP");
  await Promise.all(background);
});

test("U+0000 or a lone surrogate in task, idempotencyKey or a cancel reason is 422 VALIDATION_FAILED before any database round trip", async (db) => {
  const { app } = harness(db, { store: guarded(db.store, ["enqueueRun", "cancelRun", "getRun"]) });
  const bodies = [
    '{"task":"hostile\\u0000echo"}',
    '{"task":"hostile\\ud800echo"}',
    '{"task":"\\udc00"}',
    '{"task":"hostile_echo","idempotencyKey":"key\\u0000"}',
    '{"task":"hostile_echo","idempotencyKey":"\\ud83d"}',
  ];
  for (const body of bodies) {
    const res = await send(app, "POST", "/quickjs/runs", body);
    assert.equal(res.status, 422, body);
    assert.equal(res.body.error.code, "VALIDATION_FAILED", body);
    assert.match(res.body.error.message, /U\+0000 or a lone surrogate/);
  }
  const cancel = await send(
    app,
    "POST",
    `/quickjs/runs/${crypto.randomUUID()}/cancel`,
    '{"reason":"because\\u0000"}',
  );
  assert.equal(cancel.status, 422);
  assert.equal(cancel.body.error.code, "VALIDATION_FAILED");
  // a whole surrogate pair is a character like any other
  const pair = await send(app, "POST", "/quickjs/runs", '{"task":"\\ud83d\\ude00","wait":-1}');
  assert.equal(pair.status, 422);
  assert.doesNotMatch(pair.body.error.message, /surrogate/);
});

test("U+0000 or a lone surrogate anywhere in the input is 422 VALUE_NOT_STORABLE naming where, before any database round trip", async (db) => {
  const { app } = harness(db, { store: guarded(db.store, ["enqueueRun"]) });
  const cases: [string, RegExp][] = [
    ['"a\\u0000b"', /invalid body: input: holds U\+0000/],
    ['{"deep":[1,{"x":"\\ud800"}]}', /input\.deep\.1\.x: holds/],
    ['{"k\\u0000":1}', /input\.k.*: a key holds/],
    ['["\\udfff"]', /input\.0: holds/],
  ];
  for (const [input, message] of cases) {
    const res = await send(
      app,
      "POST",
      "/quickjs/runs",
      `{"task":"hostile_echo","input":${input}}`,
    );
    assert.equal(res.status, 422, input);
    assert.equal(res.body.error.code, "VALUE_NOT_STORABLE", input);
    assert.match(res.body.error.message, message);
  }
  // another problem in the same body makes it a plain VALIDATION_FAILED naming both
  const mixed = await send(
    app,
    "POST",
    "/quickjs/runs",
    '{"task":"x","input":"\\u0000","wait":-5}',
  );
  assert.equal(mixed.status, 422);
  assert.equal(mixed.body.error.code, "VALIDATION_FAILED");
  assert.match(mixed.body.error.message, /input: .*wait: /);
});

test('an input with a "__proto__" key is stored as sent, not dropped or turned into a prototype', async (db) => {
  await publishEcho(db);
  const { app, background } = harness(db);
  const input = '{"__proto__":{"admin":true},"name":"x"}';
  const res = await send(
    app,
    "POST",
    "/quickjs/runs",
    `{"task":"hostile_echo","input":${input},"wait":5000}`,
  );
  assert.equal(res.status, 200, JSON.stringify(res.body));
  const [row] = await db.query<{ input: string }>(
    "select input::text as input from quickjs.runs where id = $1",
    [res.body.run.id],
  );
  assert.deepEqual(JSON.parse(row!.input), JSON.parse(input));
  assert.equal(({} as Record<string, unknown>).admin, undefined, "no prototype was polluted");
  await Promise.all(background);
});

test("a number past a double's range in the input is 422, not stored as null", async (db) => {
  const { app } = harness(db, { store: guarded(db.store, ["enqueueRun"]) });
  for (const input of ["1e400", '{"a":[-1e999]}']) {
    const res = await send(
      app,
      "POST",
      "/quickjs/runs",
      `{"task":"hostile_echo","input":${input}}`,
    );
    assert.equal(res.status, 422, input);
    assert.equal(res.body.error.code, "VALIDATION_FAILED");
    assert.match(res.body.error.message, /out of range/);
  }
});

test("wait out of range, fractional, negative, a string, null or 1e400 is 422 VALIDATION_FAILED", async (db) => {
  const { app } = harness(db, { store: guarded(db.store, ["enqueueRun"]) });
  for (const wait of ["-1", "25001", "1.5", '"100"', "null", "1e400", "-0.0001", "true", "[1]"]) {
    const res = await send(app, "POST", "/quickjs/runs", `{"task":"hostile_echo","wait":${wait}}`);
    assert.equal(res.status, 422, wait);
    assert.equal(res.body.error.code, "VALIDATION_FAILED", wait);
  }
  for (const limit of ["0", "51", "2.5", "1e400", '"5"']) {
    const res = await send(app, "POST", "/quickjs/tick", `{"limit":${limit}}`);
    assert.equal(res.status, 422, limit);
  }
});

test("a UTF-8 byte order mark is read past; UTF-16 and bytes that are not UTF-8 are 400 BAD_JSON", async (db) => {
  await publishEcho(db);
  const { app, background } = harness(db);
  const json = new TextEncoder().encode('{"task":"hostile_echo","input":1,"wait":5000}');
  const bom = await send(app, "POST", "/quickjs/runs", new Uint8Array([0xef, 0xbb, 0xbf, ...json]));
  assert.equal(bom.status, 200, JSON.stringify(bom.body));
  const utf16 = new Uint8Array([0xff, 0xfe, ...[...json].flatMap((b) => [b, 0])]);
  const bad = [
    utf16,
    new Uint8Array([0x7b, 0x22, 0xc3, 0x28, 0x22, 0x7d]), // {"\xc3("}
    new Uint8Array([0x22, 0xed, 0xa0, 0x80, 0x22]), // a surrogate encoded in UTF-8 (CESU)
    new Uint8Array([0x80, 0x81, 0xfe, 0xff]),
  ];
  for (const body of bad) {
    const res = await send(app, "POST", "/quickjs/runs", body);
    assert.equal(res.status, 400);
    assert.equal(res.body.error.code, "BAD_JSON");
  }
  await Promise.all(background);
});

test("path traversal and encoded ids in the path are 404 or 422 and never reach the database", async (db) => {
  const { app } = harness(db, {
    store: guarded(db.store, ["getRun", "cancelRun", "tick", "enqueueRun"]),
  });
  const id = crypto.randomUUID();
  const cases: [string, string, number][] = [
    ["GET", "/quickjs/runs/..%2Ftick", 422],
    ["GET", "/quickjs/runs/%2e%2e", 404], // URL reads %2e%2e as ..
    ["GET", `/quickjs/runs/${id}%00`, 422],
    ["GET", `/quickjs/runs/%00${id}`, 422],
    ["GET", `/quickjs/runs/${id.replaceAll("-", "")}`, 422],
    ["GET", `/quickjs/runs/{${id}}`, 422],
    ["GET", `/quickjs/runs/${id}%2Fcancel`, 422],
    ["GET", `/quickjs/runs/${"a".repeat(10_000)}`, 422],
    ["GET", "/quickjs/runs/%F0%9F%98%80", 422],
    ["POST", `/quickjs/runs/${id}/cancel/..`, 404], // URL makes it /quickjs/runs/<id>
    ["POST", "/quickjs/runs/../../etc/passwd", 404],
    ["GET", "/quickjs/runs//", 404],
    ["GET", "/quickjs%2Fruns", 404],
    ["GET", "/quickjsruns", 404],
  ];
  for (const [method, path, status] of cases) {
    const res = await send(app, method, path);
    assert.ok(
      res.status === status || (status === 404 && res.status === 405),
      `${method} ${path}: ${res.status} ${JSON.stringify(res.body)}`,
    );
  }
});

test("a request body stream that errors mid-way is 400 BAD_BODY and is not logged as an internal error", async (db) => {
  const { app } = harness(db, { store: guarded(db.store, ["enqueueRun"]) });
  const errors = captureErrors();
  try {
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('{"task":"hostile_'));
        controller.error(new Error("connection reset by peer"));
      },
    });
    const res = await send(app, "POST", "/quickjs/runs", body);
    assert.equal(res.status, 400);
    assert.equal(res.body.error.code, "BAD_BODY");
    assert.match(res.body.error.message, /could not be read/);
  } finally {
    errors.restore();
  }
  assert.deepEqual(internalErrors(errors.logged), []);
});

test("a request body that stalls is 408 BODY_TIMEOUT after bodyTimeoutMs", async (db) => {
  const { app } = harness(db, { store: guarded(db.store, ["enqueueRun"]) });
  let cancelled = false;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new TextEncoder().encode('{"task":'));
    },
    cancel() {
      cancelled = true;
    },
  });
  const started = performance.now();
  const res = await send(app, "POST", "/quickjs/runs", body);
  const elapsed = performance.now() - started;
  assert.equal(res.status, 408);
  assert.equal(res.body.error.code, "BODY_TIMEOUT");
  assert.ok(elapsed >= BODY_TIMEOUT_MS - 20 && elapsed < 3000, `${Math.round(elapsed)} ms`);
  assert.ok(cancelled, "the stalled stream was cancelled");
});

// ---- over TCP, through a real Deno.serve ---------------------------------------------------------

/** The app on a local port with console.error captured; `check` runs after the close. */
async function overTcp(
  db: TestDb,
  fn: (port: number) => Promise<void>,
): Promise<void> {
  const { app, background } = harness(db);
  const served = serveApp(app);
  const errors = captureErrors();
  try {
    await fn(served.port);
    // the server still answers after whatever happened
    const after = await rawRequest(served.port, [
      `GET /quickjs/runs/${crypto.randomUUID()} HTTP/1.1\r\nhost: x\r\nauthorization: ${AUTH}\r\n\r\n`,
    ]);
    assert.equal(after.status, 404, after.text);
  } finally {
    await served.close();
    errors.restore();
    await Promise.allSettled(background);
  }
  assert.deepEqual(served.escaped, [], "nothing escaped the app to Deno.serve");
  assert.deepEqual(internalErrors(errors.logged), [], "nothing was logged as an internal error");
}

const head = (path: string, extra = "") =>
  `POST ${path} HTTP/1.1\r\nhost: x\r\nauthorization: ${AUTH}\r\ncontent-type: application/json\r\n${extra}`;

test("an invalid chunk size is a 4xx and is not logged as an internal error", async (db) => {
  await overTcp(db, async (port) => {
    for (const size of ["zz", "-1", "ffffffffffffffffffff", "1;" + "x".repeat(10_000), ""]) {
      const res = await rawRequest(port, [
        head("/quickjs/runs", "transfer-encoding: chunked\r\n\r\n"),
        `${size}\r\n{"task":"x"}\r\n0\r\n\r\n`,
      ]);
      // the server may answer 400 itself, or close: either way no 5xx
      assert.ok(res.status === null || (res.status >= 400 && res.status < 500), res.text);
    }
  });
});

test("a chunked body that lies about its chunk length is 400 BAD_BODY or closed, never 500", async (db) => {
  await overTcp(db, async (port) => {
    const res = await rawRequest(port, [
      head("/quickjs/runs", "transfer-encoding: chunked\r\n\r\n"),
      '4\r\n{"task":"x"}\r\n0\r\n\r\n',
    ]);
    assert.ok(res.status === null || (res.status >= 400 && res.status < 500), res.text);
  });
});

test("a client that stalls mid-body gets 408 BODY_TIMEOUT", async (db) => {
  await overTcp(db, async (port) => {
    const res = await rawRequest(port, [
      head("/quickjs/runs", "content-length: 100\r\n\r\n"),
      '{"task":',
    ]);
    assert.equal(res.status, 408, res.text);
    assert.match(res.text, /BODY_TIMEOUT/);
    const chunked = await rawRequest(port, [
      head("/quickjs/tick", "transfer-encoding: chunked\r\n\r\n"),
      "2\r\n{}\r\n",
    ]);
    assert.equal(chunked.status, 408, chunked.text);
  });
});

test("a client that disconnects mid-body is not logged as an internal error", async (db) => {
  await overTcp(db, async (port) => {
    await rawRequest(port, [head("/quickjs/runs", "content-length: 100\r\n\r\n"), '{"ta'], {
      leave: true,
    });
    await rawRequest(port, [
      head("/quickjs/runs", "transfer-encoding: chunked\r\n\r\n"),
      '10\r\n{"task":',
    ], { leave: true });
    // let the server notice
    await new Promise((r) => setTimeout(r, BODY_TIMEOUT_MS + 200));
  });
});

test("a client that disconnects before or after its response is not an error", async (db) => {
  await publishEcho(db);
  await overTcp(db, async (port) => {
    const body = '{"task":"hostile_echo","input":1,"wait":2000}';
    const before = await runCount(db);
    await rawRequest(
      port,
      [head("/quickjs/runs", `content-length: ${body.length}\r\n\r\n`), body],
      {
        leave: true,
      },
    );
    const full = await rawRequest(port, [
      head("/quickjs/runs", `content-length: ${body.length}\r\n\r\n`),
      body,
    ]);
    assert.equal(full.status, 200, full.text);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await runCount(db), before + 2, "the abandoned request's run still exists");
  });
});

test("odd request lines, huge headers and absolute-form targets are 4xx, never 500", async (db) => {
  await overTcp(db, async (port) => {
    const auth = `authorization: ${AUTH}\r\n`;
    const cases = [
      `FOO /quickjs/tick HTTP/1.1\r\nhost: x\r\n${auth}\r\n`,
      `DELETE /quickjs/runs HTTP/1.1\r\nhost: x\r\n${auth}\r\n`,
      `GET /quickjs/runs/../tick HTTP/1.1\r\nhost: x\r\n${auth}\r\n`,
      `GET http://evil.example/quickjs/tick HTTP/1.1\r\nhost: x\r\n${auth}\r\n`,
      `GET /quickjs/tick?x=${"a".repeat(20_000)} HTTP/1.1\r\nhost: x\r\n${auth}\r\n`,
      `GET /quickjs/tick HTTP/1.1\r\nhost: x\r\nx-big: ${"a".repeat(200_000)}\r\n\r\n`,
      `GET /quickjs/tick HTTP/1.1\r\nhost: x\r\n${"x-h: 1\r\n".repeat(500)}\r\n`,
      `POST /quickjs/tick HTTP/1.1\r\nhost: x\r\n${auth}content-length: 2\r\ncontent-length: 3\r\n\r\n{}`,
      `POST /quickjs/tick HTTP/1.1\r\nhost: x\r\n${auth}content-length: -5\r\n\r\n`,
      `POST /quickjs/tick HTTP/1.1\r\nhost: x\r\n${auth}transfer-encoding: gzip\r\n\r\n{}`,
      "\x00\x01\x02 garbage\r\n\r\n",
      `GET /quickjs/tick HTTP/9.9\r\nhost: x\r\n\r\n`,
    ];
    for (const request of cases) {
      const res = await rawRequest(port, [request]);
      assert.ok(
        res.status === null || (res.status >= 400 && res.status < 500),
        `${request.slice(0, 60)}: ${res.text.slice(0, 200)}`,
      );
    }
  });
});
