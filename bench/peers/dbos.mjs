/**
 * bench:peers driver for DBOS Transact: workflows enqueued with DBOSClient.enqueue() onto the
 * "bench" queue (DBOS has no bulk enqueue: up to 4 at a time), ONE dbos_worker.mjs process.
 *
 *   node bench/peers/dbos.mjs <setup|trivial|latency|steps|sleep|steady> --db postgres://…
 */
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { peerRequire, peerVersion } from "./peer_modules.mjs";
import { runDriver } from "./workloads.mjs";

const HERE = fileURLToPath(new URL(".", import.meta.url));
const IN_FLIGHT = 4;

function adapter({ db }) {
  const require = peerRequire();
  const { Pool } = require("pg");
  const pool = new Pool({ connectionString: db, max: 2 });
  const one = async (text, params) => (await pool.query(text, params)).rows[0];
  let client;
  const dbos = async () => {
    client ??= await require("@dbos-inc/dbos-sdk").DBOSClient.create({
      systemDatabaseUrl: db,
      systemDatabasePoolSize: IN_FLIGHT,
    });
    return client;
  };
  return {
    name: "dbos",
    versions: {},
    setup() {
      const out = spawnSync(process.execPath, [`${HERE}dbos_worker.mjs`, db, "1", "--setup"], {
        stdio: "inherit",
      });
      if (out.status !== 0) throw new Error(`dbos_worker --setup exited ${out.status}`);
      this.versions = {
        "@dbos-inc/dbos-sdk": peerVersion("@dbos-inc/dbos-sdk"),
        node: process.version,
        pollMs: Number(process.env.BENCH_DBOS_POLL_MS ?? 1000),
      };
    },
    async reset() {
      await pool.query("truncate dbos.workflow_status cascade");
    },
    async enqueue(kind, n, from) {
      const c = await dbos();
      const keys = Array.from({ length: n }, (_, k) => from + k);
      let next = 0;
      const lane = async () => {
        while (next < keys.length) {
          const i = keys[next++];
          await c.enqueue(
            { queueName: "bench", workflowName: `bench_${kind}`, appVersion: "bench" },
            { i },
          );
        }
      };
      await Promise.all(Array.from({ length: Math.min(IN_FLIGHT, n) }, lane));
      return keys;
    },
    async pending() {
      return (await one(
        `select count(*)::int as n from dbos.workflow_status
         where status in ('ENQUEUED', 'PENDING', 'DELAYED')`,
      )).n;
    },
    async failed() {
      return (await one(
        `select count(*)::int as n from dbos.workflow_status
         where status not in ('ENQUEUED', 'PENDING', 'DELAYED', 'SUCCESS')`,
      )).n;
    },
    bodyStartedAt(key, starts) {
      return starts.get(key);
    },
    worker({ concurrency }) {
      return {
        cmd: process.execPath,
        args: [`${HERE}dbos_worker.mjs`, db, String(concurrency)],
        env: {},
        cwd: HERE,
      };
    },
    async close() {
      await client?.destroy();
      await pool.end();
    },
  };
}

process.exit(await runDriver(adapter, process.argv.slice(2)));
