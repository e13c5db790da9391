/**
 * A worker paused with SIGSTOP right after the journal recorded one of its calls: its lease
 * runs out, another worker finishes the run, and on SIGCONT the stale worker must write
 * nothing (kv), start nothing (child runs) and send nothing (services). The pause point is
 * exact: see tests/support/freeze_point.ts.
 */
import assert from "node:assert/strict";
import { dbTests, type TestDb } from "../support/db.ts";
import { recordingService, registerService } from "../support/recording_service.ts";
import { freezeAfterRecording, freezeAfterSettling } from "../support/freeze_point.ts";
import { sleep, startWorker, waitFor, type WorkerProcess } from "../support/worker_processes.ts";

const { test } = dbTests("reliability_sigstop");
const SERVER_ONLY = "runs worker processes, which cannot open the tests' in-memory PGlite";

async function completed(db: TestDb, runId: string, timeoutMs = 30_000) {
  return await waitFor(`run ${runId} completes`, async () => {
    const run = await db.store.getRun(runId);
    return run?.status === "completed" && run;
  }, timeoutMs);
}

/** SIGCONT, then wait until the stale worker has reported the run (lost, or an error). */
async function resume(stale: WorkerProcess, runId: string): Promise<string> {
  stale.signal("SIGCONT");
  const line = await waitFor(
    `${stale.id} reports run ${runId} after SIGCONT`,
    () => stale.invocations().find((l) => l.runId === runId),
    15_000,
  );
  await sleep(500); // anything it still sends after reporting
  return line.status + (line.error ? ` (${line.error})` : "");
}

/** The journal as "seq service status attempts" lines: where the stale worker froze. */
async function journal(db: TestDb, runId: string): Promise<string[]> {
  const rows = await db.query<{ line: string }>(
    `select seq || ' ' || service || ' ' || status || ' ' || attempts as line
     from quickjs.calls where run_id = $1 order by seq`,
    [runId],
  );
  return rows.map((r) => r.line);
}

/** Once the worker's statement has committed (it runs on after the lock is released). */
async function journalBecomes(db: TestDb, runId: string, expected: string[]): Promise<void> {
  let last: string[] = [];
  await waitFor("the frozen worker's statement commits", async () => {
    last = await journal(db, runId);
    return JSON.stringify(last) === JSON.stringify(expected);
  }, 5000).catch(() => {});
  assert.deepEqual(last, expected, "the stale worker froze right after journaling this call");
}

async function callSettledAt(db: TestDb, runId: string, seq: number): Promise<number> {
  const [row] = await db.query<{ ms: number }>(
    `select (extract(epoch from completed_at) * 1000)::float8 as ms from quickjs.calls
     where run_id = $1 and seq = $2 and status = 'succeeded'`,
    [runId, seq],
  );
  assert.ok(row, `call ${seq} of ${runId} succeeded`);
  return row.ms;
}

test(
  "a worker paused (SIGSTOP) right after journaling a service call does not send it on SIGCONT, once another worker has settled it",
  async (db) => {
    const service = recordingService();
    await registerService(db, "rec", service.url);
    await db.store.publishTask({
      name: "stale_service",
      code: `export default async function () {
        const a = await tools.rec.echo("before");
        const b = await tools.rec.echo("the call");
        return [a, b];
      }`,
    });
    const run = await db.store.enqueueRun({ task: "stale_service" });
    const point = await freezeAfterRecording(db, run.id, 2);
    const stale = startWorker({ db: db.url!, id: "stale-service-a" });
    let fresh: WorkerProcess | undefined;
    try {
      await point.freeze(stale);
      await journalBecomes(db, run.id, ["1 rec succeeded 1", "2 rec started 1"]);
      fresh = startWorker({ db: db.url!, id: "fresh-service-b" });
      const done = await completed(db, run.id);
      assert.deepEqual(done.result, ["before", "the call"]);
      const settledAt = await callSettledAt(db, run.id, 2);
      const status = await resume(stale, run.id);
      const calls = service.received.filter((r) => r.runId === run.id && r.seq === 2);
      const late = calls.filter((r) => r.at > settledAt);
      console.log(
        `[reliability] sigstop service: call 2 reached the service ${calls.length} time(s) ` +
          `(attempts ${calls.map((r) => r.attempt).join(", ")}); after SIGCONT the stale ` +
          `worker ${
            late.length
              ? `sent it again ${
                late.map((r) => `${r.at - settledAt} ms`).join(", ")
              } after it had settled`
              : "sent nothing"
          }; it reported the run ${status}`,
      );
      assert.deepEqual(
        late.map((r) => `attempt ${r.attempt} +${r.at - settledAt} ms`),
        [],
        "the stale worker sent a call another worker had already settled",
      );
    } catch (e) {
      console.log([stale, fresh].map((w) => w?.tail() ?? "").join("\n"));
      throw e;
    } finally {
      await point.release();
      await Promise.all([stale.stop(), fresh?.stop()]);
      await service.close();
    }
  },
  {
    serverOnly: SERVER_ONLY,
  },
);

test(
  "a worker paused (SIGSTOP) right after journaling kv.set does not write it on SIGCONT over what the run's new worker wrote",
  async (db) => {
    await db.store.publishTask({
      name: "stale_kv",
      code: `export default async function (input) {
        await tools.kv.set(input.key, "first");
        await tools.kv.set(input.key, "final");
        return await tools.kv.get(input.key);
      }`,
    });
    const key = `stale-kv-${crypto.randomUUID()}`;
    const run = await db.store.enqueueRun({ task: "stale_kv", input: { key } });
    // kv_call journals and applies the write in one transaction: frozen right after it
    const point = await freezeAfterRecording(db, run.id, 1, "kv_call");
    const stale = startWorker({ db: db.url!, id: "stale-kv-a" });
    let fresh: WorkerProcess | undefined;
    try {
      await point.freeze(stale);
      await journalBecomes(db, run.id, ["1 kv succeeded 1"]);
      fresh = startWorker({ db: db.url!, id: "fresh-kv-b" });
      const done = await completed(db, run.id);
      assert.equal(done.result, "final");
      const status = await resume(stale, run.id);
      const [row] = await db.query<{ value: unknown }>(
        "select value from quickjs.kv where key = $1",
        [key],
      );
      console.log(
        `[reliability] sigstop kv: the run completed with "final"; after SIGCONT the stale ` +
          `worker reported the run ${status} and kv holds ${JSON.stringify(row?.value)}`,
      );
      assert.equal(row?.value, "final", "the stale worker's kv.set landed after the run ended");
    } catch (e) {
      console.log([stale, fresh].map((w) => w?.tail() ?? "").join("\n"));
      throw e;
    } finally {
      await point.release();
      await Promise.all([stale.stop(), fresh?.stop()]);
    }
  },
  {
    serverOnly: SERVER_ONLY,
  },
);

test(
  "a worker paused (SIGSTOP) right after journaling kv.delete does not delete on SIGCONT what the run's new worker wrote",
  async (db) => {
    await db.store.publishTask({
      name: "stale_kv_delete",
      code: `export default async function (input) {
        await tools.kv.delete(input.key);
        await tools.kv.set(input.key, "final");
        return await tools.kv.get(input.key);
      }`,
    });
    const key = `stale-kv-delete-${crypto.randomUUID()}`;
    const run = await db.store.enqueueRun({ task: "stale_kv_delete", input: { key } });
    const point = await freezeAfterRecording(db, run.id, 1, "kv_call");
    const stale = startWorker({ db: db.url!, id: "stale-kv-delete-a" });
    let fresh: WorkerProcess | undefined;
    try {
      await point.freeze(stale);
      await journalBecomes(db, run.id, ["1 kv succeeded 1"]);
      fresh = startWorker({ db: db.url!, id: "fresh-kv-delete-b" });
      const done = await completed(db, run.id);
      assert.equal(done.result, "final");
      const status = await resume(stale, run.id);
      const [row] = await db.query<{ value: unknown }>(
        "select value from quickjs.kv where key = $1",
        [key],
      );
      console.log(
        `[reliability] sigstop kv.delete: the run completed with "final"; after SIGCONT the ` +
          `stale worker reported the run ${status} and kv holds ` +
          `${row ? JSON.stringify(row.value) : "nothing (the stale delete landed)"}`,
      );
      assert.equal(row?.value, "final", "the stale worker's kv.delete landed after the run ended");
    } catch (e) {
      console.log([stale, fresh].map((w) => w?.tail() ?? "").join("\n"));
      throw e;
    } finally {
      await point.release();
      await Promise.all([stale.stop(), fresh?.stop()]);
    }
  },
  {
    serverOnly: SERVER_ONLY,
  },
);

test(
  "a worker paused (SIGSTOP) right after journaling a call's outcome does not start the next call's child run on SIGCONT",
  async (db) => {
    let locked = false;
    const hold: { lockRun?: () => Promise<void> } = {};
    const service = recordingService({
      onRequest: async (r) => {
        if (r.seq === 1 && !locked) {
          locked = true;
          await hold.lockRun!(); // the worker's settle_call of this call will wait for it
        }
      },
    });
    await registerService(db, "rec", service.url);
    await db.store.publishTask({
      name: "stale_child_kid",
      code: `export default async function (input) { return { kid: input }; }`,
    });
    await db.store.publishTask({
      name: "stale_child",
      code: `export default async function () {
        const a = await tools.rec.echo("before");
        const kid = await tools.tasks.execute("stale_child_kid", 7);
        return { a, kid };
      }`,
    });
    const run = await db.store.enqueueRun({ task: "stale_child" });
    const point = await freezeAfterSettling(db, run.id);
    hold.lockRun = point.lockRun;
    const stale = startWorker({ db: db.url!, id: "stale-child-a" });
    let fresh: WorkerProcess | undefined;
    try {
      await point.freeze(stale);
      await journalBecomes(db, run.id, ["1 rec succeeded 1"]);
      fresh = startWorker({ db: db.url!, id: "fresh-child-b" });
      const done = await completed(db, run.id);
      assert.deepEqual(done.result, { a: "before", kid: { kid: 7 } });
      const status = await resume(stale, run.id);
      const children = await db.query<{ id: string; status: string }>(
        "select id::text, status::text from quickjs.runs where parent_run_id = $1",
        [run.id],
      );
      console.log(
        `[reliability] sigstop child: ${children.length} child run(s) ` +
          `(${children.map((c) => c.status).join(", ")}); after SIGCONT the stale worker ` +
          `reported the run ${status}`,
      );
      assert.equal(children.length, 1, "one child run: the stale worker started none");
      assert.match(status, /^lost/, "the stale worker was refused (STALE_LEASE) and gave up");
    } catch (e) {
      console.log([stale, fresh].map((w) => w?.tail() ?? "").join("\n"));
      throw e;
    } finally {
      await point.release();
      await Promise.all([stale.stop(), fresh?.stop()]);
      await service.close();
    }
  },
  { serverOnly: SERVER_ONLY },
);
