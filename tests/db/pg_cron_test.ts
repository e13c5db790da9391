/**
 * pg_cron for real: the migration schedules quickjs.tick() (every minute on pg_cron 1.4), and pg_cron's own
 * scheduler runs it, which wakes a sleeper that is due. Needs a server with pg_cron
 * preloaded (.ci/run starts one, with cron.database_name = quickjs_cron); elsewhere the
 * test says so and is skipped.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { findServer } from "../support/db.ts";
import { migrate, postgresExecutor } from "../../supabase/functions/_shared/quickjs/dev.ts";

const server = await findServer();
let cronDatabase: string | undefined;
if (server) {
  const sql = postgres(server, { max: 1, onnotice: () => {} });
  try {
    const [row] = await sql`
      select current_setting('shared_preload_libraries', true) as preload,
             current_setting('cron.database_name', true) as db`;
    if (String(row?.preload ?? "").includes("pg_cron") && row?.db) cronDatabase = String(row.db);
  } finally {
    await sql.end();
  }
}
if (!cronDatabase) {
  console.log("[tests] pg_cron is not preloaded on this server: the pg_cron test is skipped");
}

Deno.test({
  name:
    "pg_cron runs quickjs.tick() (every 10 s on 1.5+, else every minute), and the tick wakes a sleeper that is due",
  ignore: !cronDatabase,
  fn: async () => {
    const url = new URL(server!);
    url.pathname = `/${cronDatabase}`;
    const sql = postgres(url.toString(), { max: 1, onnotice: () => {} });
    try {
      // a fresh schema in pg_cron's database, which outlives test runs
      await sql.unsafe(`
        do $$ begin
          if to_regnamespace('cron') is not null then
            perform cron.unschedule(jobid) from cron.job where jobname = 'quickjs-tick';
          end if;
        end $$;
        drop schema if exists quickjs cascade;
        drop schema if exists supabase_migrations cascade;`);
      await migrate(postgresExecutor(sql));
      const jobs = await sql`select schedule, command from cron.job where jobname = 'quickjs-tick'`;
      const [ext] = await sql`select extversion from pg_extension where extname = 'pg_cron'`;
      const [major, minor] = String(ext?.extversion).split(".").map((n) => parseInt(n, 10));
      // second schedules came with pg_cron 1.5 (Supabase); Debian's 1.4 schedules by minute
      const schedule = major! > 1 || (major === 1 && minor! >= 5) ? "10 seconds" : "* * * * *";
      assert.deepEqual(
        jobs.map((j) => ({ ...j })),
        [{ schedule, command: "select quickjs.tick()" }],
      );
      await sql`select quickjs.publish_task('cron_sleeper', 'export default async () => 1')`;
      const [run] = await sql`select (quickjs.enqueue_run('cron_sleeper') ->> 'id')::uuid as id`;
      const id = String(run!.id);
      await sql`
        update quickjs.runs set status = 'suspended', wake_at = now() - interval '1 second',
          waiting_on = '{"calls": [1]}' where id = ${id}`;
      // pg_cron 1.4 schedules by the minute: within ~70 s its tick must have run
      let status = "suspended";
      for (let waited = 0; waited < 75 && status === "suspended"; waited++) {
        await new Promise((r) => setTimeout(r, 1000));
        const [row] = await sql`select status::text from quickjs.runs where id = ${id}`;
        status = String(row!.status);
      }
      assert.equal(status, "queued", "pg_cron's tick woke the run");
      const [details] = await sql`
        select d.status from cron.job_run_details d join cron.job j using (jobid)
        where j.jobname = 'quickjs-tick' order by d.start_time desc limit 1`;
      assert.equal(details?.status, "succeeded");
    } finally {
      await sql.end();
    }
  },
});
