/**
 * Services that fail, hang, stall their body, drop the connection or answer garbage, called
 * by runs on real worker processes beside healthy runs: each faulty call ends its run with a
 * named error code (never left "running"), is sent once, and the workers and the other runs
 * carry on. QUICKJS_RELIABILITY=1 repeats each fault more often, with more healthy runs.
 */
import assert from "node:assert/strict";
import { dbTests, type TestDb } from "../support/db.ts";
import { ROOT } from "../support/cli.ts";
import { expectedTotal, recordingService, registerService } from "../support/recording_service.ts";
import { type Fault, FAULTS, faultyService } from "../support/faulty_service.ts";
import { auditRuns, finalCount } from "../support/run_audit.ts";
import { LONG, startWorker, waitFor, type WorkerProcess } from "../support/worker_processes.ts";

const { test } = dbTests("reliability_service_faults");
const SERVER_ONLY = "runs worker processes, which cannot open the tests' in-memory PGlite";
const SHAPE = LONG ? { each: 5, healthy: 40, steps: 6 } : { each: 1, healthy: 6, steps: 4 };
/** Services time out after this; the hanging and stalling ones must end by it. */
const TIMEOUT_MS = 1000;

/** The code the run must fail with, per fault. */
const EXPECTED: Record<Fault, string> = {
  fail: "SERVICE_ERROR",
  hang: "SERVICE_TIMEOUT",
  stall: "SERVICE_TIMEOUT",
  drop: "SERVICE_ERROR",
  dropbody: "SERVICE_ERROR",
  garbage: "SERVICE_ERROR",
};

/**
 * Runs `each` faulty runs per fault beside `healthy` runs of steps.js on two worker
 * processes until all are final; then one more healthy run, to show the workers still work.
 */
async function scenario(db: TestDb, label: string, faults: readonly Fault[], healthy: number) {
  const faulty = faultyService();
  const rec = recordingService({ delayMs: () => 10 });
  const workers: WorkerProcess[] = [];
  const prefix = `${label}_`;
  try {
    await registerService(db, `${prefix}rec`, rec.url);
    for (const fault of faults) {
      await registerService(db, `${prefix}${fault}`, faulty.url(fault), TIMEOUT_MS);
    }
    const healthyTask = `${prefix}steps`;
    await db.store.publishTask({
      name: healthyTask,
      code: (await Deno.readTextFile(`${ROOT}tests/fixtures/reliability/steps.js`))
        .replaceAll("tools.rec.step", `tools.${prefix}rec.step`)
        .replaceAll("`total:", `\`${prefix}total:`),
    });
    const faultyTask = `${prefix}faulty_call`;
    await db.store.publishTask({
      name: faultyTask,
      code: `export default async function (input) {
        return await tools["${prefix}" + input.fault].call(input.n);
      }`,
    });
    const faultRuns: { id: string; fault: Fault }[] = [];
    for (let n = 0; n < SHAPE.each; n++) {
      for (const fault of faults) {
        const run = await db.store.enqueueRun({ task: faultyTask, input: { fault, n } });
        faultRuns.push({ id: run.id, fault });
      }
    }
    for (let i = 0; i < healthy; i++) {
      await db.store.enqueueRun({ task: healthyTask, input: { x: 5000 + i, steps: SHAPE.steps } });
    }
    const t0 = Date.now();
    workers.push(startWorker({ db: db.url!, id: `${prefix}1`, concurrency: 4 }));
    workers.push(startWorker({ db: db.url!, id: `${prefix}2`, concurrency: 4 }));
    await waitFor("every run final", async () => {
      const a = await finalCount(db, faultyTask);
      const b = await finalCount(db, healthyTask);
      return a.final === a.all && b.final === b.all;
    }, LONG ? 120_000 : 40_000).catch((e) => {
      throw new Error(`${e.message}\n${workers.map((w) => w.tail()).join("\n")}`);
    });
    const ms = Date.now() - t0;

    const outcomes: Record<string, Record<string, number>> = {};
    const codes: { fault: Fault; status: string; code: string; message: string }[] = [];
    for (const { id, fault } of faultRuns) {
      const run = (await db.store.getRun(id))!;
      const code = run.error?.code ?? "none";
      (outcomes[fault] ??= {})[code] = (outcomes[fault]![code] ?? 0) + 1;
      codes.push({ fault, status: run.status, code, message: run.error?.message ?? "" });
    }
    const audit = await auditRuns(db, {
      task: healthyTask,
      service: `${prefix}rec`,
      received: rec.received,
      expected: expectedTotal,
      kvPrefix: `${prefix}total:`,
      faults: [],
    });
    const after = await db.store.enqueueRun({ task: healthyTask, input: { x: 9999, steps: 2 } });
    const late = await waitFor("a run after the faults completes", async () => {
      const run = await db.store.getRun(after.id);
      return run?.status === "completed" && run;
    }, 20_000).catch(async (e) => {
      const run = await db.store.getRun(after.id);
      throw new Error(
        `${e.message}: ${JSON.stringify(run)}\n${workers.map((w) => w.tail()).join("\n")}`,
      );
    });
    const exited = (await Promise.all(
      workers.map((w) => Promise.race([w.status.then(() => 1), Promise.resolve(0)])),
    )).reduce((a, b) => a + b, 0);
    console.log(
      `[reliability] service faults (${label}): ${faultRuns.length} faulty runs ended in ${ms} ms ` +
        `as ${JSON.stringify(outcomes)}; requests per fault ${JSON.stringify(faulty.requests)}; ` +
        `${audit.figures.completed}/${audit.figures.runs} healthy runs completed, ` +
        `${audit.figures.wrong} wrong; ${workers.length - exited}/${workers.length} workers alive`,
    );
    assert.equal(exited, 0, "no worker exited");
    assert.deepEqual(late.result, expectedTotal({ x: 9999, steps: 2 }));
    assert.deepEqual(audit.breaches, []);
    assert.equal(audit.figures.lost, 0);
    for (const fault of faults) {
      assert.equal(faulty.requests[fault], SHAPE.each, `${fault} was called once per run`);
    }
    return codes;
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
    await faulty.close();
    await rec.close();
  }
}

test(
  "a service that fails, hangs, stalls its body, drops the connection or answers garbage fails the run with a named code, never leaves it running; the workers and the other runs are unaffected",
  async (db) => {
    const codes = await scenario(db, "all", FAULTS, SHAPE.healthy);
    for (const c of codes) {
      assert.equal(c.status, "failed", `${c.fault}: the run ended`);
      assert.match(c.code, /^[A-Z][A-Z0-9_]+$/, `${c.fault}: a named code`);
    }
    // the faults whose code is right today; stall and dropbody: the known-bug test below
    const exact = codes.filter((c) => !["stall", "dropbody"].includes(c.fault));
    assert.deepEqual(
      exact.map((c) => `${c.fault}: ${c.code}`),
      exact.map((c) => `${c.fault}: ${EXPECTED[c.fault]}`),
    );
  },
  { serverOnly: SERVER_ONLY },
);

test(
  "a service whose body stalls fails the call with SERVICE_TIMEOUT, and one that drops the connection in the middle of the body with SERVICE_ERROR",
  async (db) => {
    const codes = await scenario(db, "body", ["stall", "dropbody"], 2);
    assert.deepEqual(
      codes.map((c) => `${c.fault}: ${c.code}`),
      codes.map((c) => `${c.fault}: ${EXPECTED[c.fault]}`),
      codes.map((c) => `${c.fault}: ${c.message}`).join("; "),
    );
  },
  {
    serverOnly: SERVER_ONLY,
  },
);
