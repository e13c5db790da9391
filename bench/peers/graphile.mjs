/**
 * bench:peers driver for graphile-worker: jobs added with graphile_worker.add_job() in one
 * statement (as ours), ONE graphile_worker.mjs process. A job is deleted when it succeeds, so
 * "pending" is the jobs left without an error.
 *
 *   node bench/peers/graphile.mjs <setup|trivial|latency|steps|sleep|steady> --db postgres://…
 */
import { fileURLToPath } from "node:url";
import { peerRequire, peerVersion } from "./peer_modules.mjs";
import { runDriver } from "./workloads.mjs";

const HERE = fileURLToPath(new URL(".", import.meta.url));

function adapter({ db }) {
  const require = peerRequire();
  const { Pool } = require("pg");
  const pool = new Pool({ connectionString: db, max: 2 });
  const one = async (text, params) => (await pool.query(text, params)).rows[0];
  return {
    name: "graphile",
    versions: {},
    async setup() {
      await require("graphile-worker").runMigrations({ connectionString: db });
      this.versions = { "graphile-worker": peerVersion("graphile-worker"), node: process.version };
    },
    async reset() {
      await pool.query(
        "truncate graphile_worker._private_jobs, graphile_worker._private_job_queues cascade",
      );
    },
    async enqueue(kind, n, from) {
      await pool.query(
        `select graphile_worker.add_job($1, json_build_object('i', g))
         from generate_series($2::int, $3::int) g`,
        [`bench_${kind}`, from, from + n - 1],
      );
      return Array.from({ length: n }, (_, k) => from + k);
    },
    async pending() {
      return (await one(
        "select count(*)::int as n from graphile_worker._private_jobs where last_error is null",
      )).n;
    },
    async failed() {
      return (await one(
        "select count(*)::int as n from graphile_worker._private_jobs where last_error is not null",
      )).n;
    },
    bodyStartedAt(key, starts) {
      return starts.get(key);
    },
    worker({ concurrency }) {
      return {
        cmd: process.execPath,
        args: [`${HERE}graphile_worker.mjs`, db, String(concurrency)],
        env: {},
        cwd: HERE,
      };
    },
    async close() {
      await pool.end();
    },
  };
}

process.exit(await runDriver(adapter, process.argv.slice(2)));
