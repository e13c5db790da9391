#!/usr/bin/env -S deno run -A
/**
 * bench:peers driver for this project: the workloads of workloads.mjs against ONE
 * scripts/worker.ts process, its runs queued with quickjs.enqueue_run() over postgres.js.
 *
 *   deno run -A --frozen bench/peers/ours.ts <setup|trivial|latency|steps|sleep|steady>
 *     --db postgres://… [--concurrency N] [--n N] [--samples N] [--batches N] [--per-batch N]
 */
import postgres from "postgres";
import { fileURLToPath } from "node:url";
import { migrate, postgresExecutor } from "../../supabase/functions/_shared/quickjs/dev.ts";
import { runDriver } from "./workloads.mjs";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** One task per kind; `latency` records when its body began as its first act. */
const TASKS: Record<string, string> = {
  trivial: `export default async function () { return 1; }`,
  latency: `export default async function () { return Date.now(); }`,
  steps: `export default async function () {
  let total = 0;
  for (let i = 0; i < 10; i++) total += await tools.bench.step(i);
  return total;
}`,
  sleep: `export default async function () {
  await sleep(1000);
  return 1;
}`,
};

async function gitHead(): Promise<string> {
  const out = await new Deno.Command("git", { args: ["rev-parse", "--short", "HEAD"], cwd: ROOT })
    .output();
  return new TextDecoder().decode(out.stdout).trim();
}

function adapter({ db }: { db: string }) {
  const sql = postgres(db, { max: 2, onnotice: () => {} });
  return {
    name: "ours",
    versions: {} as Record<string, string>,
    async setup() {
      const admin = postgres(db, { max: 1, onnotice: () => {} }); // migrate() runs BEGIN itself
      try {
        await migrate(postgresExecutor(admin));
      } finally {
        await admin.end();
      }
      for (const [kind, code] of Object.entries(TASKS)) {
        await sql`select quickjs.publish_task(${"bench_" + kind}, ${code})`;
      }
      this.versions = { ours: await gitHead(), deno: Deno.version.deno };
    },
    async reset() {
      await sql`truncate quickjs.runs cascade`;
    },
    async enqueue(kind: string, n: number, from: number): Promise<string[]> {
      const rows = await sql<{ id: string }[]>`
        select quickjs.enqueue_run(p_task => ${"bench_" + kind},
                                   p_input => jsonb_build_object('i', g)) ->> 'id' as id
        from generate_series(${from}::int, ${from + n - 1}::int) g`;
      return rows.map((r) => r.id);
    },
    async pending(): Promise<number> {
      const [row] =
        await sql`select count(*)::int as n from quickjs.runs where finished_at is null`;
      return row!.n;
    },
    async failed(): Promise<number> {
      const [row] = await sql`select count(*)::int as n from quickjs.runs
                              where status in ('failed', 'cancelled')`;
      return row!.n;
    },
    async bodyStartedAt(key: string): Promise<number | undefined> {
      const [row] = await sql`select result from quickjs.runs
                              where id = ${key} and status = 'completed'`;
      return row ? Number(row.result) : undefined;
    },
    worker({ concurrency }: { concurrency: number }) {
      return {
        cmd: Deno.execPath(),
        args: [
          "run",
          "-A",
          "--frozen",
          "scripts/worker.ts",
          "--db",
          db,
          "--concurrency",
          String(concurrency),
          "--tools",
          "bench/peers/bench_tools.ts",
          // the 1 s sleep of the sleep workload must be durable, not held in-process
          "--inline-sleep-max-ms",
          "0",
          // peers.ts --ours-mode: the VMs on the worker's thread, or on its pool of threads
          ...(Deno.env.get("BENCH_OURS_MODE") === "threads" ? [] : ["--in-process"]),
        ],
        env: {},
        cwd: ROOT,
      };
    },
    async close() {
      await sql.end();
    },
  };
}

if (import.meta.main) {
  Deno.exit(await runDriver(adapter, Deno.args));
}
