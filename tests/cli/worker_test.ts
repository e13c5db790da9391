/**
 * The self-hosted worker: scripts/lib/worker_loop.ts driven in-process (every database)
 * and scripts/worker.ts as a real process (a server: a subprocess cannot share an
 * in-memory PGlite). It claims on NOTIFY, on wake times and by polling, keeps to its
 * concurrency, and on stop hands a run in the middle of its work to the next worker.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import postgres from "postgres";
import { retireOtherRuns, SERVER, testGroup } from "../support/groups.ts";
import { ROOT, runScript } from "../support/cli.ts";
import type { TestDb } from "../support/db.ts";
import {
  type CustomTool,
  Engine,
  type InvocationResult,
  type RunView,
  ToolRegistry,
} from "../../supabase/functions/_shared/quickjs/mod.ts";
import { createScratchDb, readMigrations } from "../../supabase/functions/_shared/quickjs/dev.ts";
import { WorkerLoop, type WorkerOptions } from "../../scripts/lib/worker_loop.ts";
import { serve } from "../support/engine_scenarios.ts";

const { test } = testGroup("cli_worker");
const SUBPROCESS = "runs the worker as a subprocess, which cannot open the tests' in-memory PGlite";

let counter = 0;
async function publish(db: TestDb, code: string): Promise<string> {
  const name = `w${Date.now().toString(36)}_${++counter}`;
  await db.store.publishTask({ name, code });
  return name;
}

/** A worker over the test database with its own engine (and worker id). */
function newWorker(
  db: TestDb,
  options: WorkerOptions & { custom?: Record<string, CustomTool>; inlineSleepMaxMs?: number } = {},
) {
  const results: InvocationResult[] = [];
  const errors: unknown[] = [];
  const engine = new Engine({
    store: db.store,
    tools: new ToolRegistry(db.store, { custom: options.custom }),
    workerId: `test-worker-${++counter}`,
    inlineSleepMaxMs: options.inlineSleepMaxMs,
  });
  const worker = new WorkerLoop(db.store, engine, {
    ...options,
    onInvocation: (result) => results.push(result),
    onError: (e) => errors.push(e),
  });
  return { worker, results, errors };
}

async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false>,
  timeoutMs: number,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function status(db: TestDb, runId: string): Promise<RunView> {
  const run = await db.store.getRun(runId);
  assert.ok(run, `run ${runId} exists`);
  return run;
}

function completed(db: TestDb, runId: string) {
  return async () => {
    const run = await status(db, runId);
    return run.status === "completed" && run;
  };
}

const ECHO = `export default async function (input) { return { echo: input }; }`;

/** A task that makes `steps` calls to tools.slow.step, one after the other. */
const LONG = `export default async function (input) {
  let sum = 0;
  for (let i = 0; i < input.steps; i++) sum += await tools.slow.step(i);
  return sum;
}`;

/** tools.slow.step(i): waits `ms`, answers i, counts its calls. */
function slowTool(ms: number) {
  const calls: number[] = [];
  const tool: CustomTool = async (_method, args) => {
    calls.push(args[0] as number);
    await new Promise((r) => setTimeout(r, ms));
    return args[0];
  };
  return { calls, tool };
}

// ---- in-process ---------------------------------------------------------------------------

test("with once, the worker runs the queued runs and ends when nothing is due", async (db) => {
  await retireOtherRuns(db);
  const task = await publish(db, ECHO);
  const ids = [];
  for (let i = 0; i < 3; i++) ids.push((await db.store.enqueueRun({ task, input: i })).id);
  const { worker, results, errors } = newWorker(db, { once: true });
  await worker.start();
  const stats = await worker.finished;
  assert.deepEqual(errors, []);
  assert.equal(stats.invocations, 3);
  assert.deepEqual(results.map((r) => r.runId).sort(), [...ids].sort());
  for (const [i, id] of ids.entries()) {
    const run = await status(db, id);
    assert.equal(run.status, "completed");
    assert.deepEqual(run.result, { echo: i });
  }
});

test("a run inserted by plain SQL is picked up through NOTIFY, long before the poll interval", async (db) => {
  await retireOtherRuns(db);
  const task = await publish(db, ECHO);
  const { worker, results } = newWorker(db, { pollMs: 120_000 });
  await worker.start();
  try {
    assert.equal(worker.stats.listening, true, "the driver can LISTEN");
    // let the first claim find nothing and the loop settle into its two-minute wait
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(results.length, 0);
    const t0 = Date.now();
    const [row] = await db.query<{ id: string }>(
      "insert into quickjs.runs (task_name, input) values ($1, '{\"sql\": true}') returning id",
      [task],
    );
    const run = await waitFor("the inserted run completes", completed(db, row!.id), 10_000);
    assert.deepEqual(run.result, { echo: { sql: true } });
    assert.ok(Date.now() - t0 < 10_000);
  } finally {
    await worker.stop();
  }
});

test("a run whose durable sleep is due is woken at its wake time, not at the next poll", async (db) => {
  await retireOtherRuns(db);
  const task = await publish(
    db,
    `export default async function () {
      const t0 = Date.now();
      await sleep("1500ms");
      return Date.now() - t0 >= 1500;
    }`,
  );
  // sleeps above 100 ms are durable: the run suspends and the worker must wake it
  const { worker, results } = newWorker(db, { pollMs: 120_000, inlineSleepMaxMs: 100 });
  await worker.start();
  try {
    const t0 = Date.now();
    const { id } = await db.store.enqueueRun({ task });
    const run = await waitFor("the sleeper completes", completed(db, id), 15_000);
    const elapsed = Date.now() - t0;
    assert.equal(run.result, true);
    assert.deepEqual(results.map((r) => r.status), ["suspended", "completed"]);
    assert.equal(results[1]!.restored, true);
    assert.ok(elapsed >= 1500, `woke after ${elapsed} ms`);
    assert.ok(elapsed < 10_000, `woke after ${elapsed} ms`);
  } finally {
    await worker.stop();
  }
});

test("the worker's own tick fails an asynchronous call whose service stopped heartbeating, with no pg_cron", async (db) => {
  await retireOtherRuns(db);
  const service = serve(() => Response.json({ accepted: true }, { status: 202 }));
  const name = `hb_${Date.now().toString(36)}_${++counter}`;
  await db.query(
    `insert into quickjs.services (name, url, completion, heartbeat_timeout_ms)
     values ($1, $2, 'async', 1000)`,
    [name, service.url],
  );
  const task = await publish(
    db,
    `export default async function () {
      try {
        return await tools.${name}.work();
      } catch (e) {
        return e.code;
      }
    }`,
  );
  // the poll is far away: only the tick can fail the call and wake the run
  const { worker, results } = newWorker(db, { pollMs: 120_000, tickMs: 200 });
  await worker.start();
  try {
    const { id } = await db.store.enqueueRun({ task });
    const run = await waitFor("the run completes", completed(db, id), 15_000);
    assert.equal(run.result, "HEARTBEAT_TIMEOUT");
    assert.deepEqual(results.map((r) => r.status), ["suspended", "completed"]);
  } finally {
    await worker.stop();
    await service.close();
  }
});

test("the worker never runs more invocations at once than its concurrency", async (db) => {
  await retireOtherRuns(db);
  let active = 0;
  let most = 0;
  const gate: CustomTool = async () => {
    most = Math.max(most, ++active);
    await new Promise((r) => setTimeout(r, 150));
    active--;
    return null;
  };
  const task = await publish(
    db,
    `export default async function (i) { await tools.gate.hold(); return i; }`,
  );
  const ids = [];
  for (let i = 0; i < 6; i++) ids.push((await db.store.enqueueRun({ task, input: i })).id);
  const { worker, errors } = newWorker(db, { concurrency: 2, once: true, custom: { gate } });
  await worker.start();
  const stats = await worker.finished;
  assert.deepEqual(errors, []);
  assert.equal(most, 2, "two at a time: never more, and the worker did use both slots");
  assert.equal(stats.maxConcurrent, 2);
  for (const id of ids) assert.equal((await status(db, id)).status, "completed");
});

test("stop() hands a run in the middle of a long task over; a second worker finishes it from where it was", async (db) => {
  await retireOtherRuns(db);
  const task = await publish(db, LONG);
  const slow = slowTool(100);
  const first = newWorker(db, { pollMs: 120_000, custom: { slow: slow.tool } });
  await first.worker.start();
  const { id } = await db.store.enqueueRun({ task, input: { steps: 20 } });
  await waitFor("the task is under way", () => Promise.resolve(slow.calls.length >= 3), 10_000);
  assert.equal((await status(db, id)).status, "running");
  const t0 = Date.now();
  await first.worker.stop();
  assert.ok(Date.now() - t0 < 5000, "the run was handed over at its next idle point");
  const handedOver = await status(db, id);
  assert.ok(
    handedOver.status === "queued" || handedOver.status === "suspended",
    `handed over, not left ${handedOver.status}`,
  );
  assert.equal(handedOver.leaseOwner, undefined);
  assert.deepEqual(first.results.map((r) => r.status), [handedOver.status]);
  const callsBefore = slow.calls.length;
  assert.ok(callsBefore < 20, "stopped in the middle");

  const second = newWorker(db, { once: true, custom: { slow: slow.tool } });
  await second.worker.start();
  await second.worker.finished;
  const run = await status(db, id);
  assert.equal(run.status, "completed");
  assert.equal(run.result, 190); // 0 + 1 + … + 19
  assert.equal(second.results[0]!.restored, true, "continued from the snapshot");
  // at most the one call in flight at the hand-over runs twice; nothing from the top again
  assert.ok(slow.calls.length <= 21, `tool calls: ${slow.calls.join(",")}`);
  assert.deepEqual(slow.calls.slice(0, 3), [0, 1, 2]);
  assert.equal(slow.calls.at(-1), 19);
});

// ---- the real process ---------------------------------------------------------------------

test("deno task worker --once (real process) runs a queued run and exits 0", async (db) => {
  await retireOtherRuns(db);
  const task = await publish(db, ECHO);
  const { id } = await db.store.enqueueRun({ task, input: "from the CLI" });
  const r = await runScript("worker.ts", ["--db", db.url!, "--once", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((l) => [l.runId, l.task, l.status]), [[id, task, "completed"]]);
  assert.equal(typeof lines[0].ms, "number");
  const run = await status(db, id);
  assert.equal(run.status, "completed");
  assert.deepEqual(run.result, { echo: "from the CLI" });
}, { serverOnly: SUBPROCESS });

test(
  "a worker process sent SIGTERM while a run is in flight exits 0 and leaves the run not running",
  async (db) => {
    await retireOtherRuns(db);
    const dir = await Deno.makeTempDir({ prefix: "worker-test-" });
    const toolsModule = join(dir, "tools.ts");
    await Deno.writeTextFile(
      toolsModule,
      `export default {
      slow: async (_method, args) => { await new Promise((r) => setTimeout(r, 150)); return args[0]; },
    };\n`,
    );
    const task = await publish(db, LONG);
    const { id } = await db.store.enqueueRun({ task, input: { steps: 40 } });
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--frozen",
        `${ROOT}scripts/worker.ts`,
        "--db",
        db.url!,
        "--tools",
        toolsModule,
        "--poll-ms",
        "60000",
        "--worker-id",
        "sigterm-test",
      ],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const output = child.output();
    try {
      // in flight: claimed, and a few steps journaled
      await waitFor("the run is in flight", async () => {
        const [row] = await db.query<{ status: string; calls: number }>(
          `select status::text, (select count(*)::int from quickjs.calls where run_id = r.id) as calls
         from quickjs.runs r where id = $1`,
          [id],
        );
        return row?.status === "running" && row.calls >= 3;
      }, 20_000);
    } catch (e) {
      child.kill("SIGKILL");
      const out = await output;
      throw new Error(`${(e as Error).message}\n${new TextDecoder().decode(out.stderr)}`);
    }
    child.kill("SIGTERM");
    const out = await output;
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    assert.match(stderr, /SIGTERM: handing over 1 running run/);
    const run = await status(db, id);
    assert.ok(run.status === "queued" || run.status === "suspended", `left ${run.status}`);
    assert.match(
      new TextDecoder().decode(out.stdout),
      new RegExp(`${run.status}\\s+${id}\\s+${task}`),
    );

    // and the next worker finishes it
    const next = await runScript("worker.ts", ["--db", db.url!, "--tools", toolsModule, "--once"]);
    assert.equal(next.code, 0, next.stderr);
    const done = await status(db, id);
    assert.equal(done.status, "completed");
    assert.equal(done.result, 780); // 0 + 1 + … + 39
  },
  { serverOnly: SUBPROCESS },
);

test("the worker (real process) migrates an empty database only when given --migrate", async () => {
  const scratch = await createScratchDb(SERVER!, "worker_migrate", { migrated: false });
  const sql = postgres(scratch.url, { max: 1, onnotice: () => {} });
  const schema = async () =>
    (await sql`select to_regnamespace('quickjs')::text as s`)[0]!.s as string | null;
  let ok = false;
  try {
    const without = await runScript("worker.ts", ["--db", scratch.url, "--once"]);
    assert.equal(await schema(), null, "no migrations without --migrate");
    assert.notEqual(without.code, 0, "and nothing to work on");
    const files = await readMigrations();
    const migrated = await runScript("worker.ts", ["--db", scratch.url, "--once", "--migrate"]);
    assert.equal(migrated.code, 0, migrated.stderr);
    assert.equal(await schema(), "quickjs");
    const rows = await sql<{ version: string }[]>`
      select version from supabase_migrations.schema_migrations order by version`;
    assert.deepEqual(rows.map((r) => r.version), files.map((m) => m.version));
    ok = true;
  } finally {
    await sql.end();
    if (ok) await scratch.drop();
    else console.log(`[tests] left database ${scratch.name} in place for inspection`);
  }
}, { serverOnly: SUBPROCESS });

test(
  "with --inline-sleep-max-ms 0 the worker saves the VM of a 2 s sleep instead of holding it",
  async (db) => {
    await retireOtherRuns(db);
    const task = await publish(
      db,
      `export default async function () { await sleep(2000); return 1; }`,
    );
    const { id } = await db.store.enqueueRun({ task });
    const r = await runScript("worker.ts", [
      "--db",
      db.url!,
      "--once",
      "--json",
      "--inline-sleep-max-ms",
      "0",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const first = JSON.parse(r.stdout.trim().split("\n")[0]!);
    assert.deepEqual([first.runId, first.status], [id, "suspended"]);
    assert.ok(first.snapshotBytes > 0, "the sleeping VM was saved");
  },
  { serverOnly: SUBPROCESS },
);

test("the worker refuses bad flags with exit 2", async () => {
  const r = await runScript("worker.ts", ["--concurrency", "0", "--once"]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /--concurrency must be a whole number of at least 1/);
});
