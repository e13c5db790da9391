import postgres from "postgres";
import { createScratchDb } from "../supabase/functions/_shared/quickjs/dev/scratch_db.ts";
const db = await createScratchDb("postgres://postgres@127.0.0.1:5432", "claimprobe");
const sql = postgres(db.url, { max: 1, onnotice: () => {} });
try {
  await sql`set track_functions = 'all'`;

  await sql`select quickjs.publish_task('t', 'export default async () => 1')`;
  const N = 500;
  const times: number[] = [];
  for (let i = 0; i < N; i++) {
    await sql`select quickjs.enqueue_run(p_task => 't')`;
    const t0 = performance.now();
    const rows = await sql`select * from quickjs.claim_runs('w', 1, 30)`;
    times.push(performance.now() - t0);
    const run = rows[0]!.run;
    await sql`select quickjs.complete_run(${run.id}::uuid, ${run.fencingToken}::bigint, '1'::jsonb)`.catch((e) => { if (i === 0) console.log(e.message); });
  }
  times.sort((a, b) => a - b);
  console.log("claim round trip p50", times[N >> 1].toFixed(3), "ms");
  await sql`select pg_stat_force_next_flush()`.catch(() => {}); await new Promise((r) => setTimeout(r, 1500)); await sql`select pg_stat_clear_snapshot()`;
  const f = await sql`select funcname, calls, round(total_time::numeric / calls, 3) as total_ms, round(self_time::numeric / calls, 3) as self_ms from pg_stat_user_functions where schemaname = 'quickjs' order by total_time desc limit 15`;
  for (const r of f) console.log(r.funcname.padEnd(28), r.calls, r.total_ms, r.self_ms);
} finally { await sql.end(); await db.drop(); }
