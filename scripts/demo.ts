#!/usr/bin/env -S deno run -A
/**
 * The demo: an embedded PGlite database, the migrations, the example tasks, and runs
 * started through the edge function's own handler with real Requests, including one that
 * sleeps two hours (its VM saved to Postgres) and resumes when the clock moves on.
 *
 *   deno task demo [--db URL] [--json]
 */
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { createApp } from "../supabase/functions/quickjs/http/app.ts";
import { Engine, type RunView, ToolRegistry } from "../supabase/functions/_shared/quickjs/mod.ts";
import { publishTasks, VirtualClock } from "../supabase/functions/_shared/quickjs/dev.ts";
import { openStore } from "./lib/open_store.ts";

const EXAMPLES = fileURLToPath(new URL("../examples/tasks/", import.meta.url));
const SERVICE_KEY = `demo-service-key-${crypto.randomUUID()}`;

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      db: { type: "string", default: "pglite" },
      json: { type: "boolean", default: false },
    },
  });
  const say = values.json ? () => {} : (line = "") => console.log(line);
  const started = performance.now();

  const store = await openStore(values.db);
  say(`database: ${store.description}, migrations applied`);
  const published = await publishTasks(store, EXAMPLES);
  say(`published ${published.map((t) => `${t.name} v${t.version}`).join(", ")}`);

  // A clock the demo can move: the 2-hour sleep below takes no real time.
  const clock = new VirtualClock();
  const engine = new Engine({ store, tools: new ToolRegistry(store), workerId: "demo", clock });
  const pending: Promise<unknown>[] = [];
  const app = createApp({
    store,
    engine,
    auth: { serviceRoleKey: SERVICE_KEY },
    runInBackground: (work) => pending.push(work.catch(() => {})),
  });
  const call = async (
    method: string,
    path: string,
    body?: unknown,
    key: string | null = SERVICE_KEY,
    quiet = false,
  ) => {
    const response = await app(
      new Request(`http://localhost/quickjs${path}`, {
        method,
        headers: {
          "content-type": "application/json",
          ...(key ? { authorization: `Bearer ${key}` } : {}),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      }),
    );
    const json = await response.json();
    if (!quiet) {
      say(
        `\n${method} /quickjs${path}${body ? ` ${JSON.stringify(body)}` : ""} → ${response.status}`,
      );
    }
    return { status: response.status, json };
  };
  /** What a worker or pg_cron's tick does: run what is due until `id` ends. */
  const tickUntilDone = async (id: string) => {
    let run = (await call("GET", `/runs/${id}`, undefined, SERVICE_KEY, true)).json.run as RunView;
    for (let i = 0; i < 50 && !["completed", "failed", "cancelled"].includes(run.status); i++) {
      if (run.status === "suspended" && run.wakeAt && new Date(run.wakeAt) > clock.now()) {
        show(run);
        const snapshot = await store.getSnapshot(run.id);
        if (snapshot) say(`  saved VM: ${snapshot.sizeBytes} bytes in quickjs.snapshots`);
        say(`\n  … moving the clock to ${run.wakeAt} (a deployment just waits; pg_cron ticks)`);
        clock.jumpTo(new Date(run.wakeAt));
      }
      await call("POST", "/tick", { limit: 5 }, SERVICE_KEY, true);
      run = (await call("GET", `/runs/${id}`, undefined, SERVICE_KEY, true)).json.run;
    }
    return run;
  };
  const show = (run: RunView) => {
    say(
      `  run ${run.id.slice(0, 8)}  ${run.task} v${run.taskVersion}  ${run.status}` +
        (run.suspensions ? `  (suspended ${run.suspensions}×)` : ""),
    );
    if (run.result !== undefined) say(`  result: ${JSON.stringify(run.result)}`);
    if (run.error) say(`  error:  ${run.error.code}: ${run.error.message}`);
    if (run.wakeAt) say(`  wakes:  ${run.wakeAt}`);
    for (const line of run.logs ?? []) say(`  [${line.level}] ${line.message}`);
  };
  const outcomes: Record<string, string> = {};

  // 1. A quick task, waited for.
  const hello = await call("POST", "/runs", { task: "hello", input: { name: "Ada" }, wait: 5000 });
  show(hello.json.run);
  outcomes.hello = hello.json.run.status;

  // 2. CommonJS task; the same idempotency key returns the same run.
  const words = {
    task: "count_words",
    input: { text: "the cat and the hat" },
    idempotencyKey: "doc-1",
    wait: 5000,
  };
  const first = await call("POST", "/runs", words);
  show(first.json.run);
  const again = await call("POST", "/runs", words);
  say(`  same run again: ${again.json.run.id === first.json.run.id}`);
  outcomes.count_words = first.json.run.status;

  // 3. A durable task: children, kv, and a two-hour sleep; its VM goes to Postgres.
  const report = await call("POST", "/runs", {
    task: "weekly_report",
    input: { documents: ["alpha beta", "gamma delta epsilon", "zeta"] },
    wait: 5000,
  });
  show(report.json.run);
  let run = await tickUntilDone(report.json.run.id);
  say(`\nGET /quickjs/runs/${run.id}`);
  show(run);
  outcomes.weekly_report = run.status;

  // 4. CPU work split by checkpoint(): several invocations, one result.
  const chunks = await call("POST", "/runs", {
    task: "checkpointed",
    input: { chunks: 3 },
    wait: 2000,
  });
  show(chunks.json.run);
  run = await tickUntilDone(chunks.json.run.id);
  say(`\nGET /quickjs/runs/${run.id}`);
  show(run);
  outcomes.checkpointed = run.status;

  // 5. A runaway loop fails with a named error; nothing else is affected.
  const runaway = await call("POST", "/runs", { task: "runaway", wait: 5000 });
  show(runaway.json.run);
  outcomes.runaway = runaway.json.run.status;

  // 6. Bad requests get clear JSON errors.
  const anonymous = await call("POST", "/runs", { task: "hello" }, null);
  say(`  ${JSON.stringify(anonymous.json)}`);
  const missing = await call("POST", "/runs", { task: "no_such_task" });
  say(`  ${JSON.stringify(missing.json)}`);

  await Promise.all(pending);
  await store.close();
  const expected = {
    hello: "completed",
    count_words: "completed",
    weekly_report: "completed",
    checkpointed: "completed",
    runaway: "failed",
  };
  const ok = JSON.stringify(outcomes) === JSON.stringify(expected) && anonymous.status === 401 &&
    missing.status === 404;
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  if (values.json) console.log(JSON.stringify({ ok, outcomes, seconds: Number(seconds) }));
  else say(`\n${ok ? "demo finished" : "demo FAILED"} in ${seconds} s`);
  return ok ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main());
