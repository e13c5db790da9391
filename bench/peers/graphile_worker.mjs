/**
 * ONE graphile-worker process for bench:peers: `node graphile_worker.mjs <db> <concurrency>`.
 * Task bodies mirror ours: trivial returns; latency prints when it began as its first act;
 * a ten-step workflow is a chain of ten jobs (each job adds the next); a durable 1 s sleep is
 * a job that adds its second half with run_at one second later. Defaults otherwise (LISTEN/
 * NOTIFY plus a 2 s poll).
 */
import { peerRequire } from "./peer_modules.mjs";

const [db, concurrency] = process.argv.slice(2);
const { run, Logger } = peerRequire()("graphile-worker");

const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(`[graphile] ${level}: ${message}`);
});

const taskList = {
  bench_trivial: async () => {},
  bench_latency: (payload) => {
    const at = Date.now();
    console.log(`BENCH start ${payload.i} ${at}`);
    return Promise.resolve();
  },
  bench_steps: async (payload, helpers) => {
    const k = payload.k ?? 0;
    if (k < 9) await helpers.addJob("bench_steps", { i: payload.i, k: k + 1 });
  },
  bench_sleep: async (payload, helpers) => {
    await helpers.addJob("bench_sleep_after", { i: payload.i }, {
      runAt: new Date(Date.now() + 1000),
    });
  },
  bench_sleep_after: async () => {},
};

const runner = await run({
  connectionString: db,
  concurrency: Number(concurrency),
  noHandleSignals: true,
  logger,
  taskList,
});
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => runner.stop().then(() => process.exit(0)));
}
await runner.promise;
