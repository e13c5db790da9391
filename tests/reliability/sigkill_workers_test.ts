/**
 * Worker processes killed with SIGKILL at random while they run hundreds of multi-step runs
 * that call a recording service. After the drain: no run lost, none wrong, no call sent
 * again after the journal settled it, and a call re-sent only when a kill cut it off, with
 * the same idempotency key. QUICKJS_RELIABILITY=1 runs the long version.
 */
import assert from "node:assert/strict";
import { dbTests } from "../support/db.ts";
import { ROOT } from "../support/cli.ts";
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

const { test } = dbTests("reliability_sigkill");

const SHAPE = LONG
  ? { runs: 200, steps: 10, workers: 3, kills: 50, drainMs: 300_000 }
  : { runs: 30, steps: 6, workers: 2, kills: 5, drainMs: 40_000 };

test(
  `random SIGKILL of ${SHAPE.workers} workers during ${SHAPE.runs} runs of ${SHAPE.steps} service calls: none lost, none wrong, no settled call sent again`,
  async (db) => {
    const seed = Number(Deno.env.get("QUICKJS_RELIABILITY_SEED") ?? Date.now() % 1e6);
    const random = seeded(seed);
    const service = recordingService({ delayMs: () => 5 + Math.floor(random() * 40) });
    const workers: WorkerProcess[] = [];
    const dead: WorkerProcess[] = [];
    let serial = 0;
    const spawn = () => {
      const w = startWorker({ db: db.url!, id: `kill-${++serial}`, concurrency: 4 });
      workers.push(w);
      return w;
    };
    try {
      await registerService(db, "rec", service.url);
      await db.store.publishTask({
        name: "steps",
        code: await Deno.readTextFile(`${ROOT}tests/fixtures/reliability/steps.js`),
      });
      for (let i = 0; i < SHAPE.runs; i++) {
        await db.store.enqueueRun({ task: "steps", input: { x: i + 1, steps: SHAPE.steps } });
      }
      for (let i = 0; i < SHAPE.workers; i++) spawn();
      const t0 = Date.now();
      await waitFor("the first service call", () => service.received.length > 0, 30_000);

      // kill one worker at a time, at random, and start a new one in its place
      const kills: number[] = [];
      while (kills.length < SHAPE.kills) {
        const at = faultAt(kills.length, SHAPE.kills, SHAPE.runs * SHAPE.steps);
        await waitFor("the next kill's turn", () => service.received.length >= at, 60_000);
        await sleep(random() * 200);
        const { final, all } = await finalCount(db, "steps");
        if (final === all) break; // nothing left to kill in the middle of
        const victim = workers.splice(Math.floor(random() * workers.length), 1)[0]!;
        await victim.kill();
        kills.push(victim.killedAt!);
        dead.push(victim);
        spawn();
      }
      const lastKill = Date.now();
      await waitFor("every run final", async () => {
        const { final, all } = await finalCount(db, "steps");
        return final === all;
      }, SHAPE.drainMs).catch((e) => {
        throw new Error(`${e.message}\n${workers.map((w) => w.tail()).join("\n")}`);
      });
      const drainMs = Date.now() - lastKill;
      const totalMs = Date.now() - t0;

      const audit = await auditRuns(db, {
        task: "steps",
        service: "rec",
        received: service.received,
        expected: expectedTotal,
        kvPrefix: "total:",
        faults: kills.map((t) => [t, t]),
      });
      const f = audit.figures;
      console.log(
        `[reliability] sigkill: seed ${seed}, ${f.runs} runs x ${SHAPE.steps} steps, ` +
          `${SHAPE.workers} workers, ${kills.length} kills; lost ${f.lost}, wrong ${f.wrong}; ` +
          `re-executions: ${f.resent} service calls re-sent, ${f.restartedUnsent} restarted ` +
          `before the send, ${f.leaseExpiries} runs taken over after a lease expiry; ` +
          `${f.suspensions} snapshots; ${service.received.length} requests; drain ${drainMs} ms ` +
          `after the last kill, ${totalMs} ms in all` +
          (Object.keys(audit.failures).length
            ? `; failures ${JSON.stringify(audit.failures)}`
            : ""),
      );
      assert.equal(kills.length >= Math.min(SHAPE.kills, 3), true, `only ${kills.length} kills`);
      assert.deepEqual(audit.breaches, []);
      assert.equal(f.lost, 0, `lost runs: ${JSON.stringify(audit.failures)}`);
      assert.equal(f.wrong, 0);
      assert.equal(f.runs, SHAPE.runs);
    } finally {
      await Promise.all(workers.map((w) => w.stop()));
      await service.close();
    }
  },
  { serverOnly: "runs worker processes, which cannot open the tests' in-memory PGlite" },
);
