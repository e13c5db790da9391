/**
 * Secrets at rest: a value read from kv with { secret: true } reaches the calls the task
 * makes with it, but never a journal row, a run's result or error, a log line, or a child's
 * input in plain text, also after the VM was saved and restored.
 */
import assert from "node:assert/strict";
import { dbTests, type TestDb } from "../support/db.ts";
import { harness, runToEnd } from "../support/engine_harness.ts";
import { invokeOnce, pause, startWith } from "../support/engine_scenarios.ts";
import { runScript } from "../support/cli.ts";
import type { Json, ToolCallContext } from "../../supabase/functions/_shared/quickjs/mod.ts";

const { test } = dbTests("engine_secrets");

const SECRET = "sk_live_0123456789abcdef";

/** Every text the database holds for these runs: journal, runs, logs. */
async function storedText(db: TestDb, task: string): Promise<string> {
  const rows = await db.query<{ text: string }>(
    `select coalesce(jsonb_agg(to_jsonb(r))::text, '') || coalesce((
       select jsonb_agg(to_jsonb(c))::text from quickjs.calls c
       join quickjs.runs x on x.id = c.run_id where x.task_name = $1), '') || coalesce((
       select jsonb_agg(l.message)::text from quickjs.run_logs l
       join quickjs.runs x on x.id = l.run_id where x.task_name = $1), '') as text
     from quickjs.runs r where r.task_name = $1`,
    [task],
  );
  return rows[0]!.text;
}

test("a kv secret passed to a tool reaches the tool but is stored as [secret] in the journal, result, error and logs", async (db) => {
  const received: Json[][] = [];
  const h = harness(db.store, {
    custom: {
      echo: (_method, args) => {
        received.push(args);
        return { echoed: args[0] as Json };
      },
    },
  });
  const task = `secret_use_${crypto.randomUUID().slice(0, 8)}`;
  const id = await startWith(
    h,
    `export default async function () {
      await tools.kv.set("api-key", ${JSON.stringify(SECRET)}, { secret: true });
      const key = await tools.kv.get("api-key");
      const reply = await tools.echo.call("Bearer " + key);
      await tools.sleep("1h"); // saved and restored: the restored VM still knows the secret
      const again = await tools.echo.call({ ["x-" + key]: key });
      console.log("using", key);
      return { same: reply.echoed === "Bearer " + key, leaked: "key=" + key, again };
    }`,
    null,
    { name: task },
  );
  const run = await runToEnd(h, id);
  assert.equal(run.status, "completed");
  assert.deepEqual(received, [[`Bearer ${SECRET}`], [{ [`x-${SECRET}`]: SECRET }]]);
  assert.deepEqual(run.result, {
    same: true,
    leaked: "key=[secret]",
    again: { echoed: { "x-[secret]": "[secret]" } },
  });
  const calls = await h.store.listCalls(id);
  const echo = calls.filter((c) => c.service === "echo");
  assert.deepEqual(echo.map((c) => c.args), [["Bearer [secret]"], [{ "x-[secret]": "[secret]" }]]);
  assert.deepEqual(echo[0]!.result, { echoed: "Bearer [secret]" });
  assert.ok(h.invocations.some((i) => i.restored), "the run was restored between the calls");
  const text = await storedText(db, task);
  assert.ok(text.includes("using [secret]"));
  assert.ok(!text.includes(SECRET), "no stored row holds the secret");
});

test("a task that throws a secret fails with it redacted from the stored error", async (db) => {
  const h = harness(db.store);
  const task = `secret_throw_${crypto.randomUUID().slice(0, 8)}`;
  const id = await startWith(
    h,
    `export default async function () {
      await tools.kv.set("pw", ${JSON.stringify(SECRET)}, { secret: true });
      throw new Error("bad password " + await tools.kv.get("pw"));
    }`,
    null,
    { name: task },
  );
  const run = await runToEnd(h, id);
  assert.equal(run.status, "failed");
  assert.match(run.error!.message, /bad password \[secret\]/);
  assert.ok(!(await storedText(db, task)).includes(SECRET));
});

test("a secret in a child run's input is refused with SECRET_TO_CHILD; no child is made", async (db) => {
  const h = harness(db.store);
  const task = `secret_child_${crypto.randomUUID().slice(0, 8)}`;
  const id = await startWith(
    h,
    `export default async function (input, ctx) {
      if (input) return "child ran";
      await tools.kv.set("token", ${JSON.stringify(SECRET)}, { secret: true });
      const token = await tools.kv.get("token");
      try {
        return await tools.tasks.execute(ctx.task, { token });
      } catch (e) {
        return e.code;
      }
    }`,
    null,
    { name: task },
  );
  const run = await runToEnd(h, id);
  assert.equal(run.result, "SECRET_TO_CHILD");
  const [row] = await db.query<{ n: number }>(
    "select count(*)::int as n from quickjs.runs where task_name = $1",
    [task],
  );
  assert.equal(row!.n, 1);
  const call = (await h.store.listCalls(id)).find((c) => c.service === "tasks")!;
  assert.deepEqual(call.args, [task, { token: "[secret]" }]);
  assert.ok(!(await storedText(db, task)).includes(SECRET));
});

// ---- one test per way a task could carry a secret to a stored row ----------------------------

/** Task code that stores SECRET as a kv secret and reads it back into `key`. */
const READ_SECRET = `await tools.kv.set("api-key", ${JSON.stringify(SECRET)}, { secret: true });
      const key = await tools.kv.get("api-key");`;

test("a secret passed to http.fetch's URL and headers is stored as [secret] in the journal", async (db) => {
  const requests: { url: string; auth: string | null }[] = [];
  const h = harness(db.store, {
    tools: {
      http: {
        allow: ["api.example.com"],
        resolve: () => Promise.resolve(["93.184.216.34"]),
        fetch: ((input: URL | string, init: RequestInit = {}) => {
          requests.push({
            url: String(input),
            auth: new Headers(init.headers).get("authorization"),
          });
          return Promise.resolve(new Response("ok"));
        }) as typeof fetch,
      },
    },
  });
  const task = `secret_fetch_${crypto.randomUUID().slice(0, 8)}`;
  const id = await startWith(
    h,
    `export default async function () {
      ${READ_SECRET}
      const res = await tools.http.fetch("https://api.example.com/v1?key=" + key, {
        headers: { authorization: "Bearer " + key },
      });
      return res.status;
    }`,
    null,
    { name: task },
  );
  const run = await runToEnd(h, id);
  assert.equal(run.status, "completed", JSON.stringify(run.error));
  assert.deepEqual(requests, [{
    url: `https://api.example.com/v1?key=${SECRET}`,
    auth: `Bearer ${SECRET}`,
  }], "the request itself carries the real secret");
  const fetchCall = (await h.store.listCalls(id)).find((c) => c.service === "http")!;
  assert.deepEqual(fetchCall.args, [
    "https://api.example.com/v1?key=[secret]",
    { headers: { authorization: "Bearer [secret]" } },
  ]);
  assert.ok(!(await storedText(db, task)).includes(SECRET), "no stored row holds the secret");
});

test("a service that echoes the secret in its error is stored as [secret] in the call's and the run's error", async (db) => {
  const h = harness(db.store, {
    custom: {
      login: (_method, args) => {
        throw Object.assign(new Error(`password ${String(args[0])} rejected`), {
          code: "SERVICE_ERROR",
        });
      },
    },
  });
  const task = `secret_error_${crypto.randomUUID().slice(0, 8)}`;
  const id = await startWith(
    h,
    `export default async function () {
      ${READ_SECRET}
      await tools.login.check(key); // not caught: the run fails with the service's error
    }`,
    null,
    { name: task },
  );
  const run = await runToEnd(h, id);
  assert.equal(run.status, "failed");
  assert.match(run.error!.message, /password \[secret\] rejected/);
  const call = (await h.store.listCalls(id)).find((c) => c.service === "login")!;
  assert.equal(call.status, "failed");
  assert.match(call.error!.message, /password \[secret\] rejected/);
  assert.ok(!(await storedText(db, task)).includes(SECRET));
});

test("a secret logged in text, in an object, and through console.error is stored as [secret] in the run's log", async (db) => {
  const h = harness(db.store);
  const task = `secret_log_${crypto.randomUUID().slice(0, 8)}`;
  // a quote and a backslash: inside an object the console prints it JSON-escaped
  const tricky = 'sk"live\\0123456789';
  const id = await startWith(
    h,
    `export default async function () {
      await tools.kv.set("pw", ${JSON.stringify(tricky)}, { secret: true });
      const pw = await tools.kv.get("pw");
      console.log("pw is", pw);
      console.log({ pw, nested: [pw] });
      console.error(new Error("failed with " + pw).message);
      return "logged";
    }`,
    null,
    { name: task },
  );
  const run = await runToEnd(h, id);
  assert.equal(run.status, "completed");
  const messages = run.logs!.filter((l) => l.level !== "system").map((l) => l.message);
  assert.deepEqual(messages, [
    "pw is [secret]",
    '{"pw":"[secret]","nested":["[secret]"]}',
    "failed with [secret]",
  ]);
  const text = await storedText(db, task);
  assert.ok(!text.includes("0123456789"), "neither the raw nor the escaped form is stored");
});

test("a call carrying a secret cut off by the wall budget is not sent again with [secret] in its arguments: it fails SECRET_CALL_INTERRUPTED", async (db) => {
  const received: Json[][] = [];
  const h = harness(db.store, {
    budget: { wallMs: 2000 },
    // a short declared timeout, so the call starts in-process instead of being deferred
    tools: { customTimeoutMs: 10 },
    custom: {
      slow: async (_method, args, context: ToolCallContext) => {
        received.push(args);
        await pause(30_000, context.signal); // outlives the invocation
        return "done";
      },
    },
  });
  const task = `secret_cut_${crypto.randomUUID().slice(0, 8)}`;
  const id = await startWith(
    h,
    `export default async function () {
      ${READ_SECRET}
      try {
        return await tools.slow.work("Bearer " + key);
      } catch (e) {
        return e.code;
      }
    }`,
    null,
    { name: task },
  );
  const first = await invokeOnce(h, id);
  assert.equal(first.status, "queued", "suspended at the budget with the call in flight");
  const run = await runToEnd(h, id);
  assert.equal(run.result, "SECRET_CALL_INTERRUPTED");
  assert.deepEqual(
    received,
    [[`Bearer ${SECRET}`]],
    "sent once, with the real value, never redacted",
  );
  assert.ok(!(await storedText(db, task)).includes(SECRET));
});

test(
  "diagnose inspect prints [secret] where the task sent a secret, never the secret itself",
  async (db) => {
    const h = harness(db.store, { custom: { echo: (_m, args) => args[0] as Json } });
    const task = `secret_cli_${crypto.randomUUID().slice(0, 8)}`;
    const id = await startWith(
      h,
      `export default async function () {
        ${READ_SECRET}
        await tools.echo.call("Bearer " + key);
        console.log("token", key);
        await sleep("2 hours"); // suspended: inspect shows the journal, logs and snapshot
      }`,
      null,
      { name: task },
    );
    const [result] = await h.engine.claimAndRun({ runId: id });
    assert.equal(result?.status, "suspended");
    for (const flags of [["--json"], []]) {
      const r = await runScript("diagnose-vm-state.ts", ["inspect", id, "--db", db.url!, ...flags]);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.includes("Bearer [secret]"), r.stdout);
      assert.ok(
        !r.stdout.includes(SECRET) && !r.stderr.includes(SECRET),
        "the CLI prints no secret",
      );
    }
  },
  { serverOnly: "runs the CLI as a subprocess, which cannot open the tests' in-memory PGlite" },
);
