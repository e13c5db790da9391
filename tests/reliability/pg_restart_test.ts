/**
 * The database crashes (immediate stop, then start) several times while worker processes
 * run multi-step runs that call a recording service. On a cluster of the test's own, never
 * the shared server. The workers recover by themselves: no run lost, none wrong, no settled
 * call sent again. QUICKJS_RELIABILITY=1 runs the long version.
 */
import assert from "node:assert/strict";
import { ROOT } from "../support/cli.ts";
import {
  type Cluster,
  clusterUnavailable,
  openClusterDb,
  startCluster,
} from "../support/pg_cluster.ts";
import { expectedTotal, recordingService, registerService } from "../support/recording_service.ts";
import { auditRuns, finalCount } from "../support/run_audit.ts";
import {
  faultAt,
  LONG,
  seeded,
  sleep,
  startWorker,
  waitFor,
  type WorkerProcess,
} from "../support/worker_processes.ts";
import type { TestDb } from "../support/db.ts";

const SHAPE = LONG
  ? { runs: 150, steps: 10, workers: 3, restarts: 6, downMs: [200, 3000] }
  : { runs: 30, steps: 6, workers: 2, restarts: 2, downMs: [300, 1500] };

const LEASE_SECONDS = 3;
const unavailable = clusterUnavailable();

Deno.test({
  name:
    `immediate PostgreSQL restarts (${SHAPE.restarts}) under load: the workers recover by themselves, no run lost, none wrong, no settled call sent again`,
  ignore: unavailable !== undefined,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const seed = Number(Deno.env.get("QUICKJS_RELIABILITY_SEED") ?? Date.now() % 1e6);
    const random = seeded(seed);
    const between = ([lo, hi]: number[]) => lo! + random() * (hi! - lo!);
    let cluster: Cluster | undefined;
    let db: TestDb | undefined;
    let passed = false;
    const service = recordingService({ delayMs: () => 5 + Math.floor(random() * 30) });
    const workers: WorkerProcess[] = [];
    try {
      cluster = await startCluster();
      db = await openClusterDb(cluster);
      await registerService(db, "rec", service.url);
      await db.store.publishTask({
        name: "steps",
        code: await Deno.readTextFile(`${ROOT}tests/fixtures/reliability/steps.js`),
      });
      for (let i = 0; i < SHAPE.runs; i++) {
        await db.store.enqueueRun({ task: "steps", input: { x: i + 1, steps: SHAPE.steps } });
      }
      for (let i = 0; i < SHAPE.workers; i++) {
        workers.push(startWorker({
          db: db.url!,
          id: `pg-${i + 1}`,
          concurrency: 4,
          leaseSeconds: LEASE_SECONDS,
        }));
      }
      const t0 = Date.now();
      await waitFor("the first service call", () => service.received.length > 0, 30_000);
      /** Polls that meet the database down count as "not yet". */
      const allFinal = async () => {
        try {
          const { final, all } = await finalCount(db!, "steps");
          return final === all;
        } catch {
          return false;
        }
      };
      const crashes: [number, number][] = [];
      while (crashes.length < SHAPE.restarts) {
        const at = faultAt(crashes.length, SHAPE.restarts, SHAPE.runs * SHAPE.steps);
        await waitFor("the next crash's turn", () => service.received.length >= at, 90_000);
        await sleep(random() * 300);
        if (await allFinal()) break;
        const from = Date.now();
        await cluster.crashAndRestart(between(SHAPE.downMs));
        // its effects last a lease longer: a heartbeat that met the database down may let
        // the lease of a live worker run out once it is back, and another worker re-send
        // the call in flight
        crashes.push([from, Date.now() + LEASE_SECONDS * 1000]);
      }
      const up = Date.now();
      await waitFor("every run final", allFinal, LONG ? 300_000 : 45_000).catch((e) => {
        throw new Error(`${e.message}\n${workers.map((w) => w.tail()).join("\n")}`);
      });
      const recoveryMs = Date.now() - up;
      const exited = (await Promise.all(
        workers.map((w) => Promise.race([w.status.then(() => 1), Promise.resolve(0)])),
      )).reduce((a, b) => a + b, 0);
      const audit = await auditRuns(db, {
        task: "steps",
        service: "rec",
        received: service.received,
        expected: expectedTotal,
        kvPrefix: "total:",
        faults: crashes,
      });
      const f = audit.figures;
      const errors = workers.reduce(
        (n, w) => n + w.invocations().filter((l) => l.status === "error").length,
        0,
      );
      console.log(
        `[reliability] pg restarts: seed ${seed}, ${f.runs} runs x ${SHAPE.steps} steps, ` +
          `${SHAPE.workers} workers, ${crashes.length} immediate restarts; lost ${f.lost}, ` +
          `wrong ${f.wrong}; ${f.resent} service calls re-sent, ${f.restartedUnsent} restarted ` +
          `before the send, ${f.leaseExpiries} lease expiries, ${errors} invocations cut off ` +
          `by the database; ${exited} workers exited; all final ${recoveryMs} ms after the ` +
          `last restart, ${Date.now() - t0} ms in all` +
          (Object.keys(audit.failures).length
            ? `; failures ${JSON.stringify(audit.failures)}`
            : ""),
      );
      assert.ok(crashes.length >= 1, "the database was crashed under load");
      assert.equal(exited, 0, `workers exited:\n${workers.map((w) => w.tail()).join("\n")}`);
      assert.deepEqual(audit.breaches, []);
      assert.equal(f.lost, 0, `lost runs: ${JSON.stringify(audit.failures)}`);
      assert.equal(f.wrong, 0);
      assert.equal(f.runs, SHAPE.runs);
      passed = true;
    } finally {
      await Promise.all(workers.map((w) => w.stop()));
      await service.close();
      await db?.close();
      if (cluster && passed) await cluster.destroy();
      else if (cluster) {
        await cluster.stop();
        console.log(
          `[tests] left the stopped cluster in ${cluster.dir} (database reliability, port ` +
            `${cluster.port}) for inspection; remove it when done`,
        );
      }
    }
  },
});

if (unavailable) console.log(`[tests] not run: the PostgreSQL restart test: ${unavailable}`);
