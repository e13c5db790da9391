/**
 * Secrets at rest: a value read from kv with { secret: true } reaches the calls the task
 * makes with it, but never a journal row, a run's result or error, a log line, or a child's
 * input in plain text, also after the VM was saved and restored.
 */
import assert from "node:assert/strict";
import { dbTests, type TestDb } from "../support/db.ts";
import { harness, runToEnd } from "../support/engine_harness.ts";
import { startWith } from "../support/engine_scenarios.ts";
import type { Json } from "../../supabase/functions/_shared/quickjs/mod.ts";

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
