/**
 * ONE DBOS Transact process for bench:peers: `node dbos_worker.mjs <db> <concurrency>
 * [--setup]`. The workflows mirror ours: trivial returns; latency prints when it began as its
 * first act; a ten-step workflow awaits ten registered steps that return at once; the sleep is
 * DBOS.sleep(1000). They run from one queue, "bench", with workerConcurrency = concurrency and
 * the polling interval BENCH_DBOS_POLL_MS (DBOS's default is 1000 ms; queues only poll).
 * --setup migrates the system database, registers the queue and exits.
 */
import { peerRequire } from "./peer_modules.mjs";

const [db, concurrency, flag] = process.argv.slice(2);
const { DBOS } = peerRequire()("@dbos-inc/dbos-sdk");

const step = DBOS.registerStep((i) => Promise.resolve(i), { name: "bench_step" });

DBOS.registerWorkflow(() => Promise.resolve(1), { name: "bench_trivial" });
DBOS.registerWorkflow((input) => {
  const at = Date.now();
  console.log(`BENCH start ${input.i} ${at}`);
  return Promise.resolve(at);
}, { name: "bench_latency" });
DBOS.registerWorkflow(async () => {
  let total = 0;
  for (let i = 0; i < 10; i++) total += await step(i);
  return total;
}, { name: "bench_steps" });
DBOS.registerWorkflow(async () => {
  await DBOS.sleep(1000);
  return 1;
}, { name: "bench_sleep" });

DBOS.setConfig({
  name: "bench",
  systemDatabaseUrl: db,
  applicationVersion: "bench",
  runAdminServer: false,
  logLevel: "warn",
});
await DBOS.launch();
await DBOS.registerQueue("bench", {
  workerConcurrency: Number(concurrency),
  minPollingIntervalMs: Number(process.env.BENCH_DBOS_POLL_MS ?? 1000),
  onConflict: "always_update",
});
if (flag === "--setup") {
  await DBOS.shutdown();
  process.exit(0);
}
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => DBOS.shutdown().then(() => process.exit(0)));
}
