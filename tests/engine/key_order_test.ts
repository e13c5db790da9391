/**
 * Key order: a value a task stores through kv, a child returns, or a run is given as its
 * input comes back as JSON.parse(JSON.stringify(v)) would give it, its keys in insertion
 * order, though jsonb sorts them: in the same invocation, after a restore, replayed from the
 * journal after a crash, and through PostgREST.
 */
import assert from "node:assert/strict";
import { dbTests } from "../support/db.ts";
import { harness, runTaskToEnd, runToEnd } from "../support/engine_harness.ts";
import {
  deferred,
  invokeAndCrash,
  never,
  startWith,
  taskName,
} from "../support/engine_scenarios.ts";
import { postgrestDouble } from "../support/postgrest.ts";
import { createApp } from "../../supabase/functions/quickjs/http/app.ts";
import {
  Engine,
  jsonbKeepsKeyOrder,
  Store,
  supabaseDriver,
  ToolRegistry,
} from "../../supabase/functions/_shared/quickjs/mod.ts";

const { test } = dbTests("engine_key_order");

/** Keys jsonb would reorder at every level: longer before shorter, z before a. */
const VALUE = `{ zeta: 1, a: { yy: [{ b: 1, a: 2 }], x: null }, "é": true, mid: "s" }`;

test("an object stored through kv keeps its key order", async (db) => {
  const key = taskName("order");
  const code = `export default async function ({ key }) {
    const v = ${VALUE};
    await tools.kv.set(key, v);
    const now = JSON.stringify(await tools.kv.get(key));
    await sleep("1 hour");
    const later = JSON.stringify(await tools.kv.get(key));
    return { want: JSON.stringify(v), now, later };
  }`;
  const check = (result: unknown) => {
    const { want, now, later } = result as Record<string, string>;
    assert.equal(now, want, "read back in the same invocation");
    assert.equal(later, want, "read back after a restore");
  };
  const h = harness(db.store);
  const run = await runTaskToEnd(h, code, { key });
  assert.equal(run.status, "completed", JSON.stringify(run.error));
  check(run.result);
  assert.deepEqual(Object.keys(run.result as object), ["want", "now", "later"], "a run's result");
  assert.ok(!jsonbKeepsKeyOrder(JSON.parse((run.result as { want: string }).want)));

  // the third driver: supabase-js through PostgREST (text arguments and fields survive it)
  const postgrest = postgrestDouble(db.driver, { serviceRoleKey: "service-key" });
  const store = new Store(
    supabaseDriver("http://project.supabase.test", "service-key", { fetch: postgrest.fetch }),
  );
  const viaRest = await runTaskToEnd(harness(store), code, { key: `${key}_rest` });
  assert.equal(viaRest.status, "completed", JSON.stringify(viaRest.error));
  check(viaRest.result);
  assert.deepEqual(Object.keys(viaRest.result as object), ["want", "now", "later"]);

  // plain SQL that changes the value drops the text: the new value is read, not the old text
  await db.query(`update quickjs.kv set value = '{"b": 2, "a": 1}' where key = $1`, [key]);
  const [row] = await db.query<{ value_text: string | null }>(
    "select value_text from quickjs.kv where key = $1",
    [key],
  );
  assert.equal(row!.value_text, null);
});

test("a kv value replayed from the journal after a crash keeps its key order", async (db) => {
  const key = taskName("replay");
  const started = deferred();
  let calls = 0;
  const h = harness(db.store, {
    custom: {
      hang: () => {
        if (++calls > 1) return "ok";
        started.resolve();
        return never();
      },
    },
  });
  const id = await startWith(
    h,
    `export default async function ({ key }) {
      const v = ${VALUE};
      await tools.kv.set(key, v);
      const got = await tools.kv.get(key);
      await tools.hang.on();
      return { want: JSON.stringify(v), got: JSON.stringify(got) };
    }`,
    { key },
  );
  const crash = new AbortController();
  started.promise.then(() => crash.abort(new Error("the worker died")));
  await invokeAndCrash(h, id, crash);
  // no snapshot was taken: the next invocation starts from the top, the kv calls replayed
  const run = await runToEnd(h, id);
  assert.equal(run.status, "completed", JSON.stringify(run.error));
  const { want, got } = run.result as Record<string, string>;
  assert.equal(got, want);
  const journal = await h.store.listCalls(id);
  const get = journal.find((c) => c.service === "kv" && c.path[0] === "get")!;
  assert.equal(JSON.stringify(get.result), want, "the journal's result keeps the order");
});

test("a child's result keeps its key order in its parent", async (db) => {
  const h = harness(db.store);
  const child = taskName("child");
  await h.store.publishTask({ name: child, code: `export default async () => (${VALUE})` });
  const run = await runTaskToEnd(
    h,
    `export default async function () {
      const got = await tools.tasks.execute("${child}", null);
      return { want: JSON.stringify(${VALUE}), got: JSON.stringify(got) };
    }`,
  );
  assert.equal(run.status, "completed", JSON.stringify(run.error));
  const { want, got } = run.result as Record<string, string>;
  assert.equal(got, want);
});

/** An input whose keys jsonb would give back as b, mm, zeta, alpha. */
const INPUT = { zeta: 1, alpha: 2, mm: 3, b: 4 };
const INPUT_KEYS = ["zeta", "alpha", "mm", "b"];

test("a child's input keeps its key order in the child", async (db) => {
  const child = taskName("keys");
  await db.store.publishTask({
    name: child,
    code: `export default async (input) => Object.keys(input)`,
  });
  const parent = `export default async function () {
    return await tools.tasks.execute("${child}", ${JSON.stringify(INPUT)});
  }`;
  const run = await runTaskToEnd(harness(db.store), parent);
  assert.equal(run.status, "completed", JSON.stringify(run.error));
  assert.deepEqual(run.result, INPUT_KEYS);

  // through PostgREST too: the text argument reaches start_child
  const postgrest = postgrestDouble(db.driver, { serviceRoleKey: "service-key" });
  const store = new Store(
    supabaseDriver("http://project.supabase.test", "service-key", { fetch: postgrest.fetch }),
  );
  const viaRest = await runTaskToEnd(harness(store), parent);
  assert.equal(viaRest.status, "completed", JSON.stringify(viaRest.error));
  assert.deepEqual(viaRest.result, INPUT_KEYS);
});

test("a run's input from POST /runs keeps its key order", async (db) => {
  const task = taskName("input");
  await db.store.publishTask({
    name: task,
    code: `export default async (input) => Object.keys(input)`,
  });
  const engine = new Engine({
    store: db.store,
    tools: new ToolRegistry(db.store),
    workerId: "key-order-test",
  });
  const app = createApp({
    store: db.store,
    engine,
    auth: { serviceRoleKey: "service-key", jwtSecret: "key-order-test-jwt-secret-of-32-chars" },
  });
  const res = await app(
    new Request("http://localhost/quickjs/runs", {
      method: "POST",
      headers: { authorization: "Bearer service-key" },
      body: JSON.stringify({ task, input: INPUT, wait: 10_000 }),
    }),
  );
  const { run } = await res.json();
  assert.equal(run.status, "completed", JSON.stringify(run.error));
  assert.deepEqual(run.result, INPUT_KEYS, "the task saw the keys in order");
  assert.deepEqual(Object.keys(run.input), INPUT_KEYS, "the run's input as the API shows it");
  assert.equal(run.inputText, undefined, "the text is read into input, not shown");

  const got = await app(
    new Request(`http://localhost/quickjs/runs/${run.id}`, {
      headers: { authorization: "Bearer service-key" },
    }),
  );
  assert.deepEqual(Object.keys((await got.json()).run?.input ?? {}), INPUT_KEYS, "GET /runs/:id");

  // an input jsonb keeps as it is stores no text
  const [row] = await db.query<{ input_text: string | null }>(
    "select input_text from quickjs.runs where id = $1",
    [run.id],
  );
  assert.equal(row!.input_text, JSON.stringify(INPUT));
  const plain = await db.store.enqueueRun({ task, input: { a: 1, b: { c: 2 } } });
  const [none] = await db.query<{ input_text: string | null }>(
    "select input_text from quickjs.runs where id = $1",
    [plain.id],
  );
  assert.equal(none!.input_text, null);
});

Deno.test("jsonbKeepsKeyOrder: shorter keys first, then by UTF-8 bytes, at every level", () => {
  assert.equal(jsonbKeepsKeyOrder({ a: 1, b: 2, aa: 3 }), true);
  assert.equal(jsonbKeepsKeyOrder({ b: 1, a: 2 }), false);
  assert.equal(jsonbKeepsKeyOrder({ aa: 1, b: 2 }), false);
  assert.equal(jsonbKeepsKeyOrder([1, "x", null, { a: [{ z: 1, y: 2 }] }]), false);
  assert.equal(jsonbKeepsKeyOrder({ z: 1, "é": 2 }), true, "é is two bytes");
  assert.equal(jsonbKeepsKeyOrder("text"), true);
});
