/**
 * pg_cron as Supabase has it: the migrations are applied by a role that is NOT a superuser
 * (as Supabase's `postgres`: createrole, createdb, bypassrls; pg_cron enabled by the platform's
 * admin, the cron schema granted to it), on a throwaway cluster of this test's own with
 * pg_cron preloaded. The tick must be scheduled, and pg_cron must run it as that role.
 * The shared server is never touched; skipped where no cluster or no pg_cron can be had.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { clusterUnavailable, hasPgCron, startCluster } from "../support/pg_cluster.ts";
import { SUPABASE_ROLES } from "../support/db.ts";
import { migrate, postgresExecutor } from "../../supabase/functions/_shared/quickjs/dev.ts";

const why = clusterUnavailable() ??
  (hasPgCron() ? undefined : "needs pg_cron (apt-get install postgresql-15-cron)");
if (why) console.log(`[tests] the non-superuser pg_cron test is skipped: it ${why}`);

const ADMIN = "supa_admin";

/** What Supabase's own setup gives its postgres role, and what enabling pg_cron does. */
const SUPABASE_LIKE_GRANTS = `
  create role ${ADMIN} login createrole createdb bypassrls nosuperuser;
  grant create, connect, temporary on database quickjs_cron to ${ADMIN};
  grant create on schema public to ${ADMIN};
  create extension pg_cron;
  grant usage on schema cron to ${ADMIN};
  grant all privileges on all tables in schema cron to ${ADMIN};`;

Deno.test({
  name: "migrations applied by a non-superuser role schedule the tick with pg_cron, which runs it",
  ignore: why !== undefined,
  // pg_cron's launcher keeps connections of its own; nothing here outlives the cluster
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await startCluster({
      settings: { shared_preload_libraries: "pg_cron", "cron.database_name": "quickjs_cron" },
    });
    let ok = false;
    const superuser = postgres(cluster.url, { max: 1, onnotice: () => {} });
    let admin: postgres.Sql | undefined;
    try {
      await superuser.unsafe(SUPABASE_ROLES);
      await superuser.unsafe("create database quickjs_cron");
      const cronUrl = new URL(cluster.url);
      cronUrl.pathname = "/quickjs_cron";
      const root = postgres(cronUrl.toString(), { max: 1, onnotice: () => {} });
      try {
        await root.unsafe(SUPABASE_LIKE_GRANTS);
      } finally {
        await root.end();
      }

      cronUrl.username = ADMIN;
      const notices: string[] = [];
      admin = postgres(cronUrl.toString(), {
        max: 1,
        onnotice: (n) => void notices.push(String(n.message)),
      });
      const [me] = await admin`
        select current_user as name, rolsuper from pg_roles where rolname = current_user`;
      assert.deepEqual({ ...me }, { name: ADMIN, rolsuper: false });
      // shared_preload_libraries is superuser-only: the migration used to read it, which
      // raised here as on Supabase, and the tick was never scheduled
      await assert.rejects(admin`select current_setting('shared_preload_libraries')`);
      await migrate(postgresExecutor(admin));
      assert.ok(
        !notices.some((n) => n.includes("not scheduled") || n.includes("not enabled")),
        `no notice that the tick was skipped: ${notices.join("; ")}`,
      );

      const [{ extversion }] = await admin`
        select extversion from pg_extension where extname = 'pg_cron'` as unknown as [
        { extversion: string },
      ];
      const [major, minor] = extversion.split(".").map((n) => parseInt(n, 10));
      const expected = major! > 1 || (major === 1 && minor! >= 5) ? "10 seconds" : "* * * * *";
      const jobs = await admin`
        select schedule, command, username from cron.job where jobname = 'quickjs-tick'`;
      assert.deepEqual(jobs.map((j) => ({ ...j })), [
        { schedule: expected, command: "select quickjs.tick()", username: ADMIN },
      ]);
      console.log(
        `[tests] pg_cron ${extversion}: quickjs-tick scheduled '${expected}' as ${ADMIN}`,
      );

      // calling it again (after enabling pg_cron later, say) keeps one job
      const [again] = await admin`select quickjs.schedule_tick() as schedule`;
      assert.equal(again?.schedule, expected);
      const [count] = await admin`select count(*)::int as n from cron.job`;
      assert.equal(count?.n, 1);

      // pg_cron runs the job as the role that scheduled it: the tick must succeed with
      // that role's rights (within a minute on 1.4, 10 s on 1.5+)
      let status: string | undefined;
      for (let waited = 0; waited < 75 && status !== "succeeded"; waited++) {
        await new Promise((r) => setTimeout(r, 1000));
        const [row]: { status?: string; return_message?: string }[] = await admin`
          select d.status, d.return_message from cron.job_run_details d join cron.job j using (jobid)
          where j.jobname = 'quickjs-tick' order by d.start_time desc limit 1`;
        status = row?.status;
        if (status === "failed") assert.fail(`the tick failed: ${row?.return_message}`);
      }
      assert.equal(status, "succeeded", "pg_cron ran quickjs.tick() as the non-superuser");
      ok = true;
    } finally {
      await admin?.end({ timeout: 1 }).catch(() => {});
      await superuser.end({ timeout: 1 }).catch(() => {});
      if (ok) await cluster.destroy();
      else {
        await cluster.stop();
        console.log(`[tests] the cluster is kept for inspection in ${cluster.dir}`);
      }
    }
  },
});
