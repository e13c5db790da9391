/**
 * The edge of the HTTP app: CORS, routing (404, 405), and index.ts, the function's entry
 * point, which must answer a preflight without a database and otherwise build from the env.
 */
import assert from "node:assert/strict";
import { createApp } from "../../supabase/functions/quickjs/http/app.ts";
import { Engine, ToolRegistry } from "../../supabase/functions/_shared/quickjs/mod.ts";
import { dbTests, type TestDb } from "../support/db.ts";

const { test } = dbTests("http edge");

const SERVICE_KEY = "edge-test-service-role-key";
const INDEX = new URL("../../supabase/functions/quickjs/index.ts", import.meta.url);
const CONFIG = new URL("../../deno.json", import.meta.url);

function appFor(db: TestDb, allowOrigin?: string) {
  const engine = new Engine({
    store: db.store,
    tools: new ToolRegistry(db.store),
    workerId: "edge-test",
  });
  return createApp({ store: db.store, engine, auth: { serviceRoleKey: SERVICE_KEY }, allowOrigin });
}

function assertCors(headers: Headers, origin = "*") {
  assert.equal(headers.get("access-control-allow-origin"), origin);
  assert.equal(
    headers.get("access-control-allow-headers"),
    "authorization, x-client-info, apikey, content-type",
  );
  assert.match(headers.get("access-control-allow-methods") ?? "", /GET, POST, OPTIONS/);
}

test("OPTIONS on any path answers 204 with the CORS headers and no auth", async (db) => {
  const app = appFor(db);
  for (const path of ["/quickjs/runs", "/quickjs/tick", "/functions/v1/quickjs/runs/x", "/nope"]) {
    const res = await app(new Request(`http://localhost${path}`, { method: "OPTIONS" }));
    assert.equal(res.status, 204, path);
    assert.equal(await res.text(), "");
    assertCors(res.headers);
  }
});

test("error responses carry the CORS headers too", async (db) => {
  const app = appFor(db, "https://app.example.com");
  const unauthenticated = await app(
    new Request("http://localhost/quickjs/runs", {
      method: "POST",
    }),
  );
  assert.equal(unauthenticated.status, 401);
  assertCors(unauthenticated.headers, "https://app.example.com");
  assert.equal(unauthenticated.headers.get("content-type"), "application/json");
  const missing = await app(new Request("http://localhost/elsewhere"));
  assert.equal(missing.status, 404);
  assertCors(missing.headers, "https://app.example.com");
});

test("a path that is no route is 404 NOT_FOUND, before any auth", async (db) => {
  const app = appFor(db);
  for (
    const path of [
      "/",
      "/quickjs",
      "/quickjs/run",
      "/quickjsx/runs",
      "/functions/v1/other/runs",
      `/quickjs/runs/${crypto.randomUUID()}/pause`,
      "/quickjs/runs/a/b/c",
    ]
  ) {
    const res = await app(new Request(`http://localhost${path}`, { method: "POST" }));
    assert.equal(res.status, 404, path);
    assert.deepEqual(await res.json(), {
      error: { code: "NOT_FOUND", message: `no route for ${path}` },
    });
  }
});

test("a known path with a wrong method is 405 METHOD_NOT_ALLOWED with an Allow header", async (db) => {
  const app = appFor(db);
  const id = crypto.randomUUID();
  const cases: [string, string, string][] = [
    ["GET", "/quickjs/runs", "POST, OPTIONS"],
    ["DELETE", `/quickjs/runs/${id}`, "GET, OPTIONS"],
    ["POST", `/functions/v1/quickjs/runs/${id}`, "GET, OPTIONS"],
    ["GET", `/quickjs/runs/${id}/cancel`, "POST, OPTIONS"],
    ["PUT", `/quickjs/runs/${id}/resume`, "POST, OPTIONS"],
    ["GET", "/quickjs/tick", "POST, OPTIONS"],
    ["toString", "/quickjs/tick", "POST, OPTIONS"],
  ];
  for (const [method, path, allow] of cases) {
    const res = await app(new Request(`http://localhost${path}`, { method }));
    assert.equal(res.status, 405, `${method} ${path}`);
    assert.equal(res.headers.get("allow"), allow);
    assert.equal((await res.json()).error.code, "METHOD_NOT_ALLOWED");
    assertCors(res.headers);
  }
});

test("a trailing slash names the same route", async (db) => {
  const app = appFor(db);
  const res = await app(
    new Request(`http://localhost/quickjs/runs/${crypto.randomUUID()}/`, {
      headers: { authorization: `Bearer ${SERVICE_KEY}` },
    }),
  );
  assert.equal(res.status, 404);
  assert.equal((await res.json()).error.code, "RUN_NOT_FOUND");
});

/**
 * Runs a Deno program that may read the environment and nothing else: any database, file
 * or network access fails with NotCapable. Its environment names no database.
 */
async function runConfined(args: string[]) {
  const keep = ["HOME", "PATH", "DENO_DIR", "NO_COLOR"];
  const env = Object.fromEntries(keep.flatMap((name) => {
    const value = Deno.env.get(name);
    return value === undefined ? [] : [[name, value]];
  }));
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", "--config", CONFIG.pathname, "--allow-env", ...args],
    clearEnv: true,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: output.code, stdout: decode(output.stdout), stderr: decode(output.stderr) };
}

async function withTempFile<T>(text: string, fn: (path: string) => Promise<T>): Promise<T> {
  const path = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(path, text);
    return await fn(path);
  } finally {
    await Deno.remove(path);
  }
}

test("index.ts answers OPTIONS without a database, files or the network", async () => {
  const script = `import app from ${JSON.stringify(INDEX.href)};
    const response = await app.fetch(new Request("http://localhost/quickjs/runs", { method: "OPTIONS" }));
    console.log(JSON.stringify({
      status: response.status,
      origin: response.headers.get("access-control-allow-origin"),
    }));`;
  const run = await withTempFile(script, (path) => runConfined([path]));
  assert.equal(run.code, 0, run.stderr);
  assert.deepEqual(JSON.parse(run.stdout), { status: 204, origin: "*" });
});

test("index.ts run as the main module never serves: Supabase serves its default export", async () => {
  // a second Deno.serve inside Supabase's runtime fails the boot; `deno task serve` serves locally
  const run = await runConfined([INDEX.pathname]);
  assert.equal(run.code, 0, run.stderr);
});

test("index.ts without a database answers 500 NOT_CONFIGURED, naming what to set", async () => {
  const script = `import app from ${JSON.stringify(INDEX.href)};
    const response = await app.fetch(new Request("http://localhost/quickjs/runs/x"));
    console.log(JSON.stringify({ status: response.status, body: await response.json() }));`;
  const run = await withTempFile(script, (path) => runConfined([path]));
  assert.equal(run.code, 0, run.stderr);
  const { status, body } = JSON.parse(run.stdout);
  assert.equal(status, 500);
  assert.equal(body.error.code, "NOT_CONFIGURED");
  assert.match(body.error.message, /SUPABASE_DB_URL/);
});

test("index.ts builds the app from the environment on the first other request", async (db) => {
  const names = [
    "SUPABASE_DB_URL",
    "SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_JWT_SECRET",
    "SUPABASE_JWKS_URL",
  ];
  const saved = new Map(names.map((name) => [name, Deno.env.get(name)]));
  try {
    for (const name of names) Deno.env.delete(name);
    // PGlite is not a server index.ts can reach: the test needs one
    if (!db.url) return;
    Deno.env.set("SUPABASE_DB_URL", db.url);
    Deno.env.set("SUPABASE_SERVICE_ROLE_KEY", SERVICE_KEY);
    const { default: entry } = await import(INDEX.href);
    const id = crypto.randomUUID();
    const res = await entry.fetch(
      new Request(`http://localhost/functions/v1/quickjs/runs/${id}`, {
        headers: { authorization: `Bearer ${SERVICE_KEY}` },
      }),
    );
    assert.equal(res.status, 404);
    assert.deepEqual(await res.json(), {
      error: { code: "RUN_NOT_FOUND", message: `run ${id} does not exist` },
    });
    assertCors(res.headers);
    const refused = await entry.fetch(new Request(`http://localhost/quickjs/runs/${id}`));
    assert.equal(refused.status, 401);
  } finally {
    for (const [name, value] of saved) {
      if (value === undefined) Deno.env.delete(name);
      else Deno.env.set(name, value);
    }
  }
}, {
  sanitize:
    "index.ts keeps its app (and its pool, whose idle timers outlive a request) for the process, as a worker does",
});
