/**
 * Dispatch through pg_net, which cannot be installed here: a double of its `net.http_post`
 * (same signature; it records the request instead of sending it) shows what the trigger
 * asks pg_net to send, and replaying that request against the edge function's handler
 * runs the task, as on Supabase.
 */
import assert from "node:assert/strict";
import { dbTests, type TestDb } from "../support/db.ts";
import { createApp } from "../../supabase/functions/quickjs/http/app.ts";
import { Engine, ToolRegistry } from "../../supabase/functions/_shared/quickjs/mod.ts";

const { test } = dbTests("pg_net_dispatch");

/** pg_net 0.x: net.http_post(url, body, params, headers, timeout_milliseconds) → request id. */
const PG_NET_DOUBLE = [
  `create schema if not exists net`,
  `create table if not exists net.requests (
    id bigint generated always as identity primary key,
    url text, body jsonb, params jsonb, headers jsonb, timeout_milliseconds int)`,
  `create or replace function net.http_post(
    url text, body jsonb default '{}', params jsonb default '{}',
    headers jsonb default '{"Content-Type": "application/json"}',
    timeout_milliseconds int default 5000) returns bigint language sql as $$
    insert into net.requests (url, body, params, headers, timeout_milliseconds)
    values (url, body, params, headers, timeout_milliseconds) returning id
  $$`,
];

const KEY = "service-role-key-for-the-test";

test("with dispatch = pg_net a ready run becomes POST <function_url>/runs/<id>/resume, which runs it", async (db) => {
  for (const statement of PG_NET_DOUBLE) await db.query(statement);
  await db.query("update quickjs.settings set value = 'pg_net' where key = 'dispatch'");
  await db.query(
    `insert into quickjs.settings (key, value) values
       ('function_url', 'https://project.supabase.co/functions/v1/quickjs/'),
       ('service_role_key', $1)`,
    [KEY],
  );
  await db.store.publishTask({
    name: "dispatched",
    code: `export default async (input) => ({ doubled: input.n * 2 })`,
  });
  // a plain SQL insert: the trigger announces the run
  const [row] = await db.query<{ id: string }>(
    `insert into quickjs.runs (task_name, input) values ('dispatched', '{"n": 21}') returning id`,
  );
  const requests = await db.query<{
    url: string;
    headers: Record<string, string>;
    body: unknown;
    timeout_milliseconds: number;
  }>("select url, headers, body, timeout_milliseconds from net.requests order by id");
  assert.equal(requests.length, 1);
  const request = requests[0]!;
  assert.equal(
    request.url,
    `https://project.supabase.co/functions/v1/quickjs/runs/${row!.id}/resume`,
  );
  assert.equal(request.headers.Authorization, `Bearer ${KEY}`);
  assert.equal(request.headers.apikey, KEY);
  assert.equal(request.headers["Content-Type"], "application/json");
  // /resume answers within its 25 s bound (DEFAULT_MAX_WAIT_MS); a cold start adds a little
  assert.ok(request.timeout_milliseconds >= 30_000, "pg_net waits longer than /resume's bound");

  // what the edge function does with that request
  const store = db.store;
  const app = createApp({
    store,
    engine: new Engine({ store, tools: new ToolRegistry(store), workerId: "edge" }),
    auth: { serviceRoleKey: KEY },
  });
  const response = await app(
    new Request(request.url.replace("https://project.supabase.co/functions/v1", "http://edge"), {
      method: "POST",
      headers: request.headers,
      body: JSON.stringify(request.body),
    }),
  );
  assert.equal(response.status, 200, await response.clone().text());
  const run = await store.getRun(row!.id);
  assert.equal(run?.status, "completed");
  assert.deepEqual(run?.result, { doubled: 42 });
});

test("without pg_net installed, dispatch = pg_net falls back to NOTIFY", async (db) => {
  const hasNet = await db.query<{ ok: boolean }>(
    "select to_regnamespace('net') is not null as ok",
  );
  if (hasNet[0]!.ok) await db.query("drop schema net cascade");
  await db.query("update quickjs.settings set value = 'pg_net' where key = 'dispatch'");
  await db.query(
    `insert into quickjs.settings (key, value) values ('function_url', 'https://x/quickjs')
     on conflict (key) do update set value = excluded.value`,
  );
  const heard: string[] = [];
  const unlisten = await db.driver.listen!("quickjs_runs", (id) => heard.push(id));
  try {
    await db.store.publishTask({ name: "fallback", code: `export default async () => 1` });
    const run = await db.store.enqueueRun({ task: "fallback" });
    for (let i = 0; i < 50 && !heard.includes(run.id); i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(heard.includes(run.id), "the run was announced on quickjs_runs");
  } finally {
    await unlisten();
  }
});

/** Installs the double and dispatch = pg_net with a key; returns the requests recorded so far. */
async function pgNetDispatch(db: TestDb, key: string): Promise<() => Promise<string[]>> {
  for (const statement of PG_NET_DOUBLE) await db.query(statement);
  await db.query("update quickjs.settings set value = 'pg_net' where key = 'dispatch'");
  await db.query(
    `insert into quickjs.settings (key, value) values
       ('function_url', 'https://project.supabase.co/functions/v1/quickjs'),
       ('service_role_key', $1)
     on conflict (key) do update set value = excluded.value`,
    [key],
  );
  await db.query("delete from net.requests");
  return async () =>
    (await db.query<{ url: string }>("select url from net.requests order by id")).map((r) => r.url);
}

test("a run that POST /runs executes itself is not dispatched a second time", async (db) => {
  const requests = await pgNetDispatch(db, KEY);
  await db.store.publishTask({ name: "once", code: `export default async () => "ran"` });
  const heard: string[] = [];
  const unlisten = await db.driver.listen!("quickjs_runs", (id) => heard.push(id));
  try {
    const store = db.store;
    const background: Promise<unknown>[] = [];
    const app = createApp({
      store,
      engine: new Engine({ store, tools: new ToolRegistry(store), workerId: "edge" }),
      auth: { serviceRoleKey: KEY },
      runInBackground: (work) => void background.push(work),
    });
    const response = await app(
      new Request("http://edge/quickjs/runs", {
        method: "POST",
        headers: { apikey: KEY, "content-type": "application/json" },
        body: JSON.stringify({ task: "once", wait: 10_000 }),
      }),
    );
    const body = await response.json();
    await Promise.all(background);
    assert.equal(response.status, 200, JSON.stringify(body));
    assert.equal(body.run.status, "completed");
    assert.deepEqual(await requests(), [], "no POST /resume for a run this request executed");
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(!heard.includes(body.run.id), "no NOTIFY either");

    // a plain enqueue (SQL, another service) is still dispatched
    const other = await store.enqueueRun({ task: "once" });
    assert.deepEqual(await requests(), [
      `https://project.supabase.co/functions/v1/quickjs/runs/${other.id}/resume`,
    ]);
  } finally {
    await unlisten();
  }
});

test("a run whose POST /runs could not execute it is announced at once", async (db) => {
  const requests = await pgNetDispatch(db, KEY);
  await db.store.publishTask({ name: "handed", code: `export default async () => 1` });
  const store = db.store;
  const background: Promise<unknown>[] = [];
  const engine = new Engine({ store, tools: new ToolRegistry(store), workerId: "edge" });
  // this worker is handing its runs over (beforeunload): its claims take nothing
  engine.claimAndRun = () => Promise.resolve([]);
  const app = createApp({
    store,
    engine,
    auth: { serviceRoleKey: KEY },
    runInBackground: (work) => void background.push(work),
  });
  const response = await app(
    new Request("http://edge/quickjs/runs", {
      method: "POST",
      headers: { apikey: KEY, "content-type": "application/json" },
      body: JSON.stringify({ task: "handed" }),
    }),
  );
  const body = await response.json();
  await Promise.all(background);
  assert.equal(response.status, 202);
  assert.equal(body.run.status, "queued");
  assert.deepEqual(await requests(), [
    `https://project.supabase.co/functions/v1/quickjs/runs/${body.run.id}/resume`,
  ]);
});

test("the tick dispatches through pg_net a queued run that became due after it was last changed", async (db) => {
  const requests = await pgNetDispatch(db, "sb_secret_for_the_test");
  await db.store.publishTask({ name: "later", code: `export default async () => 1` });
  // a start time in the future: the trigger sees it not yet due, and sends nothing
  const [row] = await db.query<{ id: string }>(
    `insert into quickjs.runs (task_name, run_at) values ('later', now() + interval '1 hour')
     returning id`,
  );
  assert.deepEqual(await requests(), []);
  await db.query("select quickjs.tick(now() + interval '1 hour 1 second')");
  const url = `https://project.supabase.co/functions/v1/quickjs/runs/${row!.id}/resume`;
  // (earlier tests' queued runs are an hour overdue by then: they are announced too)
  const [sent] = await db.query<{ url: string; headers: Record<string, string> }>(
    "select url, headers from net.requests where url = $1",
    [url],
  );
  assert.equal(sent?.url, url);
  // a new secret key is not a JWT: it goes in apikey, not as a bearer token
  assert.equal(sent?.headers.apikey, "sb_secret_for_the_test");
  assert.equal(sent?.headers.Authorization, undefined);
});
