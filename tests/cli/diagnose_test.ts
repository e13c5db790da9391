/**
 * scripts/diagnose-vm-state.ts and scripts/lib/diagnose.ts: inspecting a run and its saved
 * VM, a dry-run restore, finding stuck runs and repairing them (quickjs.repair_run), and
 * the largest snapshots. The module runs on every database; the real process needs a
 * server (a subprocess cannot share an in-memory PGlite).
 */
import assert from "node:assert/strict";
import { retireOtherRuns, testGroup } from "../support/groups.ts";
import { runScript } from "../support/cli.ts";
import type { TestDb } from "../support/db.ts";
import { harness, runToEnd, startTask } from "../support/engine_harness.ts";
import {
  dispatchHealth,
  findStuckRuns,
  inspectRun,
  largestSnapshots,
  repairStuckRuns,
  restoreDryRun,
} from "../../scripts/lib/diagnose.ts";
import { SNAPSHOT_FORMAT, StoreError } from "../../supabase/functions/_shared/quickjs/mod.ts";
import { at, leaseOf, startRun, T0 } from "../support/runs.ts";

const { test } = testGroup("cli_diagnose");
const SUBPROCESS = "runs the CLI as a subprocess, which cannot open the tests' in-memory PGlite";

// deno-lint-ignore no-explicit-any
type Json = any;

const SLEEPER = `export default async function (input) {
  await tools.kv.set("diagnose-" + input.n, { n: input.n });
  console.log("about to sleep", input.n);
  await sleep("2 hours");
  return input.n;
}`;

/** A run of SLEEPER suspended on its sleep (call 2) with a real snapshot. */
async function suspendedRun(db: TestDb, n = 1): Promise<string> {
  const h = harness(db.store);
  const id = await startTask(h, SLEEPER, { n });
  const [result] = await h.engine.claimAndRun({ runId: id });
  assert.equal(result?.status, "suspended");
  return id;
}

/** A run claimed by a worker that vanished: its lease ended a minute ago. */
async function expiredLease(db: TestDb): Promise<string> {
  const h = harness(db.store);
  const id = await startTask(h, SLEEPER, { n: 0 });
  const claimed = await db.store.claimRuns({
    worker: "vanished-worker",
    runId: id,
    leaseSeconds: 30,
  });
  assert.equal(claimed.length, 1);
  await db.query(
    "update quickjs.runs set lease_expires_at = now() - interval '1 minute' where id = $1",
    [id],
  );
  return id;
}

/** Damages a few bytes near the end of a run's stored snapshot. */
async function corrupt(db: TestDb, runId: string): Promise<void> {
  await db.query(
    `update quickjs.snapshots
     set bytes = overlay(bytes placing '\\xdeadbeef'::bytea from length(bytes) - 16 for 4)
     where run_id = $1`,
    [runId],
  );
}

/** A parent suspended on tools.tasks.execute, and its child ended behind its back. */
async function orphanedParent(db: TestDb): Promise<{ h: ReturnType<typeof harness>; id: string }> {
  const h = harness(db.store);
  const child = `double_${Date.now().toString(36)}`;
  await db.store.publishTask({ name: child, code: "export default async (n) => n * 2;" });
  const id = await startTask(
    h,
    `export default async function () {
      const doubled = await tools.tasks.execute(${JSON.stringify(child)}, 21);
      return { doubled };
    }`,
  );
  const [result] = await h.engine.claimAndRun({ runId: id });
  assert.equal(result?.status, "suspended");
  // the child ends without its parent's call being settled (as if the link had broken)
  const [row] = await db.query<{ child_run_id: string }>(
    "select child_run_id from quickjs.calls where run_id = $1 and seq = 1",
    [id],
  );
  await db.query(
    `update quickjs.runs set status = 'completed', result = '42', finished_at = now()
     where id = $1`,
    [row!.child_run_id],
  );
  return { h, id };
}

async function row(db: TestDb, id: string) {
  const [r] = await db.query<Record<string, Json>>(
    `select status::text, lease_expirations, lease_owner, updated_at::text, error,
            (select bytes from quickjs.snapshots where run_id = r.id) as bytes
     from quickjs.runs r where id = $1`,
    [id],
  );
  assert.ok(r, `run ${id} exists`);
  return r;
}

// ---- in-process: the module ---------------------------------------------------------------

test("inspectRun shows the run, its journal, its snapshot header and its last logs", async (db) => {
  const id = await suspendedRun(db, 7);
  const report = await inspectRun(db.store, id);
  assert.ok(report);
  assert.equal(report.run.id, id);
  assert.equal(report.run.status, "suspended");
  assert.equal(report.run.attempts, 1);
  assert.equal(report.run.suspensions, 1);
  assert.ok(report.run.wakeAt);
  assert.deepEqual(report.run.waitingOn?.calls, [2]);
  assert.equal(report.run.input, '{"n":7}');
  assert.deepEqual(
    report.calls.map((c) => [c.seq, c.call, c.mode, c.status, c.attempts, c.outcome]),
    [[1, "kv.set", "inline", "succeeded", 1, "null"], [
      2,
      "sleep",
      "durable",
      "pending",
      0,
      undefined,
    ]],
  );
  assert.equal(report.calls[1]!.idempotencyKey, `${id}:2`);
  assert.equal(
    report.calls[1]!.wakeAt && Date.parse(report.calls[1]!.wakeAt),
    Date.parse(report.run.wakeAt),
  );
  const s = report.snapshot;
  assert.ok(s);
  assert.equal(s.format, SNAPSHOT_FORMAT);
  assert.equal(s.packageVersion, "0.32.0");
  assert.match(s.wasmSha256, /^[0-9a-f]{64}$/);
  assert.deepEqual(s.parkedCalls, [2]);
  assert.equal(s.lastCallId, 2);
  assert.ok(s.sizeBytes > 1000 && s.memoryBytes > s.sizeBytes && s.pageCount! > 0);
  assert.equal(s.restorable, true);
  assert.equal(s.integrity, "ok");
  assert.ok(report.logs.some((l) => l.message === "about to sleep 7"));
});

test("inspectRun shows an asynchronous call's deadline and last heartbeat, and a retried call's failed attempts", async (db) => {
  const run = await startRun(db.store, T0);
  const lease = leaseOf(run);
  const call = { service: "svc", path: ["go"], args: [], mode: "inline" as const, wakeAt: null };
  await db.store.recordCall(lease, { ...call, seq: 1 }, T0);
  await db.store.retryCall(lease, {
    seq: 1,
    error: { name: "ServiceError", code: "SERVICE_TIMEOUT", message: "slow" },
    wakeAt: at(1),
  }, T0);
  await db.store.recordCall(lease, { ...call, seq: 1 }, at(1));
  const token = "diagnose-token";
  const sha = Array.from(
    new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(token))),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  await db.store.issueCompletion(lease, 1, sha, at(1));
  await db.store.completionSent(lease, 1, at(3600), at(1));
  await db.store.heartbeatCall({ runId: run.id, seq: 1, token, details: { percent: 40 } }, at(5));
  const report = await inspectRun(db.store, run.id);
  const c = report!.calls[0]!;
  assert.deepEqual(c.failedAttempts, ["1 SERVICE_TIMEOUT"]);
  const waiting = c.waiting?.match(/^completion by (\S+); last heartbeat (\S+) \((.*)\)$/);
  assert.ok(waiting, c.waiting);
  assert.equal(Date.parse(waiting[1]!), at(3600).getTime());
  assert.equal(Date.parse(waiting[2]!), at(5).getTime());
  assert.equal(waiting[3], '{"percent":40}');
});

test("inspectRun of a run that does not exist is null", async (db) => {
  assert.equal(await inspectRun(db.store, crypto.randomUUID()), null);
});

test("restoreDryRun restores a good snapshot without writing, and reports SNAPSHOT_CORRUPT for damaged bytes", async (db) => {
  const id = await suspendedRun(db);
  const before = await row(db, id);
  const report = await restoreDryRun(db.store, id);
  assert.equal(report.ok, true, JSON.stringify(report.error));
  assert.deepEqual(report.parkedCalls, [2]);
  assert.ok(report.restoreMs! > 0);
  assert.ok(report.memory!.heapBytes > 0 && report.memory!.wasmBytes > report.memory!.heapBytes);
  assert.deepEqual(await row(db, id), before, "nothing was written");

  await corrupt(db, id);
  const damaged = await restoreDryRun(db.store, id);
  assert.equal(damaged.ok, false);
  assert.equal(damaged.error?.code, "SNAPSHOT_CORRUPT");
  assert.equal((await row(db, id)).status, "suspended", "a dry run fails nothing");
  const inspected = await inspectRun(db.store, id);
  assert.match(inspected!.snapshot!.integrity, /^SNAPSHOT_CORRUPT: snapshot checksum mismatch/);
});

test("restoreDryRun of a run without a snapshot, or no run, is not ok", async (db) => {
  const h = harness(db.store);
  const queued = await startTask(h, SLEEPER, { n: 1 });
  assert.equal((await restoreDryRun(db.store, queued)).error?.code, "NO_SNAPSHOT");
  assert.equal((await restoreDryRun(db.store, crypto.randomUUID())).error?.code, "RUN_NOT_FOUND");
});

test("repairStuckRuns requeues a run whose lease expired, counting the expiration", async (db) => {
  await retireOtherRuns(db);
  const id = await expiredLease(db);
  const stuck = await findStuckRuns(db.store);
  assert.deepEqual(stuck.map((r) => [r.id, r.problem, r.status]), [[
    id,
    "lease expired",
    "running",
  ]]);
  const report = await repairStuckRuns(db.store);
  assert.deepEqual(report.repairs!.map((r) => [r.runId, r.action, r.run.status]), [
    [id, "requeued", "queued"],
  ]);
  const after = await row(db, id);
  assert.equal(after.status, "queued");
  assert.equal(after.lease_expirations, 1);
  assert.equal(after.lease_owner, null);
  assert.deepEqual(await findStuckRuns(db.store), []);
  const logs = (await db.store.getRun(id))!.logs!.map((l) => l.message);
  assert.ok(logs.some((m) => /^repair_run: requeued \(lease of vanished-worker expired/.test(m)));
});

test("repairStuckRuns fails a suspended run whose snapshot was deleted with RUN_UNRECOVERABLE", async (db) => {
  await retireOtherRuns(db);
  const id = await suspendedRun(db);
  await db.query("delete from quickjs.snapshots where run_id = $1", [id]);
  const stuck = await findStuckRuns(db.store);
  assert.deepEqual(stuck.map((r) => [r.id, r.problem]), [[id, "suspended without a snapshot"]]);
  const report = await repairStuckRuns(db.store);
  assert.deepEqual(report.repairs!.map((r) => [r.runId, r.action]), [[id, "failed"]]);
  const run = (await db.store.getRun(id))!;
  assert.equal(run.status, "failed");
  assert.equal(run.error?.code, "RUN_UNRECOVERABLE");
  assert.match(run.error!.message, /snapshot is missing/);
  assert.ok(run.finishedAt);
});

test("a parent waiting on a child that ended without settling its call is repaired and then completes", async (db) => {
  await retireOtherRuns(db);
  const { h, id } = await orphanedParent(db);
  const stuck = await findStuckRuns(db.store);
  assert.deepEqual(stuck.map((r) => [r.id, r.problem]), [[id, "waiting for children that ended"]]);
  const report = await repairStuckRuns(db.store);
  assert.deepEqual(report.repairs!.map((r) => [r.runId, r.action, r.run.status]), [
    [id, "settled", "queued"],
  ]);
  const [call] = await db.store.listCalls(id);
  assert.deepEqual([call!.status, call!.result], ["succeeded", 42]);
  const run = await runToEnd(h, id);
  assert.equal(run.status, "completed");
  assert.deepEqual(run.result, { doubled: 42 });
});

test("repairRun leaves a healthy run alone and refuses an unknown one", async (db) => {
  const id = await suspendedRun(db);
  const repaired = await db.store.repairRun(id);
  assert.equal(repaired.action, "none");
  assert.equal(repaired.run.status, "suspended");
  await assert.rejects(
    db.store.repairRun(crypto.randomUUID()),
    (e) => e instanceof StoreError && e.code === "RUN_NOT_FOUND",
  );
});

test("repairRun queues a sleeper whose wake time passed and announces a queued run again", async (db) => {
  const id = await suspendedRun(db);
  const later = new Date(Date.now() + 3 * 3600_000);
  const woken = await db.store.repairRun(id, later);
  assert.deepEqual([woken.action, woken.run.status], ["queued", "queued"]);
  const again = await db.store.repairRun(id, later);
  assert.equal(again.action, "dispatched");
});

test("largestSnapshots lists snapshots largest first with their task and VM memory", async (db) => {
  const small = await suspendedRun(db);
  const h = harness(db.store);
  const big = await startTask(
    h,
    `export default async function () {
      // ~200 KB that gzip cannot shrink much
      const keep = Array.from({ length: 20000 }, () => Math.random().toString(36)).join("");
      await sleep("2 hours");
      return keep.length;
    }`,
  );
  await h.engine.claimAndRun({ runId: big });
  const list = await largestSnapshots(db.store, 100);
  const ids = list.snapshots.map((s) => s.runId);
  assert.ok(ids.indexOf(big) >= 0 && ids.indexOf(big) < ids.indexOf(small), "larger first");
  const sizes = list.snapshots.map((s) => s.sizeBytes);
  assert.deepEqual(sizes, [...sizes].sort((a, b) => b - a));
  const entry = list.snapshots.find((s) => s.runId === big)!;
  assert.equal(entry.status, "suspended");
  assert.ok(entry.memoryBytes! > entry.sizeBytes);
  assert.equal(list.count, list.snapshots.length);
  assert.equal(list.totalBytes, sizes.reduce((a, b) => a + b, 0));
  assert.equal((await largestSnapshots(db.store, 1)).snapshots.length, 1);
});

test("only the service side may execute repair_run and list_snapshots", async (db) => {
  const [row] = await db.query<Record<string, boolean>>(
    `select
       has_function_privilege('authenticated', 'quickjs.repair_run(uuid, timestamptz)', 'execute') as auth_repair,
       has_function_privilege('anon', 'quickjs.list_snapshots(int)', 'execute') as anon_list,
       has_function_privilege('service_role', 'quickjs.repair_run(uuid, timestamptz)', 'execute') as service_repair,
       has_function_privilege('service_role', 'quickjs.list_snapshots(int)', 'execute') as service_list`,
  );
  assert.deepEqual(row, {
    auth_repair: false,
    anon_list: false,
    service_repair: true,
    service_list: true,
  });
});

test("diagnose refuses bad usage with exit 2", async () => {
  for (
    const args of [[], ["frobnicate"], ["inspect"], ["inspect", "not-a-uuid"], [
      "snapshots",
      "--fix",
    ]]
  ) {
    const r = await runScript("diagnose-vm-state.ts", args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, /usage: diagnose <command>/);
  }
});

// ---- the real process ---------------------------------------------------------------------

test(
  "diagnose inspect --json (real process) shows the journal and snapshot header of a suspended run",
  async (db) => {
    const id = await suspendedRun(db, 3);
    const r = await runScript("diagnose-vm-state.ts", ["inspect", id, "--db", db.url!, "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const report = r.json as Json;
    assert.equal(report.run.status, "suspended");
    assert.equal(report.run.task, (await db.store.getRun(id))!.task);
    assert.deepEqual(
      report.calls.map((c: Json) => [c.seq, c.call, c.mode, c.status]),
      [[1, "kv.set", "inline", "succeeded"], [2, "sleep", "durable", "pending"]],
    );
    assert.equal(report.snapshot.variant, "asyncify");
    assert.equal(report.snapshot.packageVersion, "0.32.0");
    assert.deepEqual(report.snapshot.parkedCalls, [2]);
    assert.equal(report.snapshot.restorable, true);
    assert.ok(report.snapshot.memoryBytes > 0 && report.snapshot.pageCount > 0);

    const human = await runScript("diagnose-vm-state.ts", ["inspect", id, "--db", db.url!]);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, new RegExp(`^run ${id}$`, "m"));
    assert.match(human.stdout, /^\s+status\s+suspended$/m);
    assert.match(human.stdout, /^\s+SEQ\s+CALL\s+MODE\s+STATUS/m);
    assert.match(human.stdout, /^\s+2\s+sleep\s+durable\s+pending/m);
    assert.match(human.stdout, /^\s+restorable\s+yes, by this build$/m);
  },
  { serverOnly: SUBPROCESS },
);

test("diagnose inspect (real process) of an unknown run exits 1", async (db) => {
  const r = await runScript("diagnose-vm-state.ts", [
    "inspect",
    crypto.randomUUID(),
    "--db",
    db.url!,
  ]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /does not exist/);
}, { serverOnly: SUBPROCESS });

test(
  "diagnose restore (real process) succeeds on a good snapshot and exits 1 with SNAPSHOT_CORRUPT on a damaged one",
  async (db) => {
    const id = await suspendedRun(db);
    const good = await runScript("diagnose-vm-state.ts", [
      "restore",
      id,
      "--db",
      db.url!,
      "--json",
    ]);
    assert.equal(good.code, 0, good.stderr);
    assert.equal(good.json!.ok, true);
    assert.deepEqual(good.json!.parkedCalls, [2]);
    assert.ok((good.json!.memory as Json).heapBytes > 0);
    await corrupt(db, id);
    const bad = await runScript("diagnose-vm-state.ts", ["restore", id, "--db", db.url!]);
    assert.equal(bad.code, 1, bad.stderr);
    assert.match(bad.stdout, /FAILED SNAPSHOT_CORRUPT/);
    assert.equal((await row(db, id)).status, "suspended");
  },
  { serverOnly: SUBPROCESS },
);

test(
  "diagnose stuck (real process) lists stuck runs and exits 1; stuck --fix repairs them and exits 0",
  async (db) => {
    await retireOtherRuns(db);
    // (every claim requeues expired leases: the expired one comes last)
    const { h, id: parent } = await orphanedParent(db);
    const lost = await suspendedRun(db);
    await db.query("delete from quickjs.snapshots where run_id = $1", [lost]);
    const expired = await expiredLease(db);

    const listed = await runScript("diagnose-vm-state.ts", ["stuck", "--db", db.url!, "--json"]);
    assert.equal(listed.code, 1, listed.stderr);
    const problems = (listed.json!.stuck as Json[]).map((s) => `${s.runId} ${s.problem}`).sort();
    assert.deepEqual(
      problems,
      [
        `${expired} lease expired`,
        `${lost} suspended without a snapshot`,
        `${parent} waiting for children that ended`,
      ].sort(),
    );
    assert.equal((await row(db, expired)).status, "running", "listing changes nothing");

    const human = await runScript("diagnose-vm-state.ts", ["stuck", "--db", db.url!]);
    assert.equal(human.code, 1);
    assert.match(human.stdout, /^PROBLEM\s+SINCE\s+RUN\s+TASK\s+STATUS$/m);
    assert.match(
      human.stdout,
      new RegExp(`^lease expired\\s+\\S+\\s+${expired}\\s+\\S+\\s+running$`, "m"),
    );

    const fixed = await runScript("diagnose-vm-state.ts", [
      "stuck",
      "--fix",
      "--db",
      db.url!,
      "--json",
    ]);
    assert.equal(fixed.code, 0, fixed.stderr);
    const actions = Object.fromEntries(
      (fixed.json!.repairs as Json[]).map((r) => [r.runId, `${r.action} ${r.status}`]),
    );
    assert.deepEqual(actions, {
      [expired]: "requeued queued",
      [lost]: "failed failed",
      [parent]: "settled queued",
    });
    assert.equal((await row(db, expired)).lease_expirations, 1);
    assert.equal((await row(db, lost)).error.code, "RUN_UNRECOVERABLE");
    const done = await runToEnd(h, parent);
    assert.deepEqual(done.result, { doubled: 42 });

    const clean = await runScript("diagnose-vm-state.ts", ["stuck", "--db", db.url!]);
    assert.equal(clean.code, 0, clean.stdout);
    assert.match(clean.stdout, /no stuck runs/);
  },
  { serverOnly: SUBPROCESS },
);

test("diagnose snapshots (real process) shows the largest snapshots", async (db) => {
  const id = await suspendedRun(db);
  const r = await runScript("diagnose-vm-state.ts", [
    "snapshots",
    "--db",
    db.url!,
    "--limit",
    "500",
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^RUN\s+TASK\s+STATUS\s+SIZE\s+MEMORY\s+BUILD\s+CREATED$/m);
  assert.match(
    r.stdout,
    new RegExp(
      `^${id}\\s+\\S+ v1\\s+suspended\\s+[\\d.]+ KiB\\s+[\\d.]+ MiB\\s+format \\d+, wasm [0-9a-f]{12}\\s`,
      "m",
    ),
  );
  assert.match(r.stdout, /\d+ snapshot\(s\), [\d.]+ \w+ in all/);
}, { serverOnly: SUBPROCESS });

// ---- dispatch: do ready runs reach an executor? -------------------------------------------

/** A queued run that became due `seconds` ago and that nobody took. */
async function unclaimedRun(db: TestDb, seconds: number): Promise<string> {
  const h = harness(db.store);
  const id = await startTask(h, "export default async () => 1");
  await db.query(
    `update quickjs.runs set run_at = now() - make_interval(secs => $2::int) where id = $1`,
    [id, seconds],
  );
  return id;
}

test("dispatchHealth warns when a run has been runnable for over a minute under notify, and not before", async (db) => {
  await retireOtherRuns(db);
  await db.query("update quickjs.settings set value = 'notify' where key = 'dispatch'");
  const fresh = await unclaimedRun(db, 5);
  const calm = await dispatchHealth(db.store);
  assert.equal(calm.mode, "notify");
  assert.equal(calm.waiting, 0);
  assert.deepEqual(calm.problems, [], "a run due for 5 s is not yet a problem");

  const old = await unclaimedRun(db, 90);
  const health = await dispatchHealth(db.store);
  assert.equal(health.waiting, 1);
  assert.equal(health.problems.length, 1);
  assert.match(health.problems[0]!, /1 run\(s\) runnable for more than 60 s/);
  assert.match(health.problems[0]!, /notify needs a listening worker/);
  assert.equal((await dispatchHealth(db.store, { afterSeconds: 120 })).waiting, 0);

  // once something runs them, all is well again
  const h = harness(db.store);
  for (const id of [old, fresh]) await runToEnd(h, id);
  assert.deepEqual((await dispatchHealth(db.store)).problems, []);
});

test("dispatchHealth names what dispatch = pg_net lacks: pg_net, the function URL, the key", async (db) => {
  await retireOtherRuns(db);
  try {
    await db.query("update quickjs.settings set value = 'pg_net' where key = 'dispatch'");
    await db.query(
      "delete from quickjs.settings where key in ('function_url', 'service_role_key')",
    );
    const health = await dispatchHealth(db.store);
    assert.equal(health.mode, "pg_net");
    const pgNet = health.pgNet;
    if (!pgNet) assert.ok(health.problems.some((p) => /pg_net is not installed/.test(p)));
    assert.ok(health.problems.some((p) => /no function_url/.test(p)), health.problems.join("; "));
    await db.query(
      "insert into quickjs.settings (key, value) values ('function_url', 'https://x.supabase.co/functions/v1/quickjs')",
    );
    const withUrl = await dispatchHealth(db.store);
    assert.ok(!withUrl.problems.some((p) => /function_url/.test(p)));
    assert.equal(withUrl.functionUrl, "https://x.supabase.co/functions/v1/quickjs");
  } finally {
    await db.query("update quickjs.settings set value = 'notify' where key = 'dispatch'");
    await db.query("delete from quickjs.settings where key = 'function_url'");
  }
});

test(
  "diagnose dispatch and diagnose stuck (real process) exit 1 when runnable runs have no executor",
  async (db) => {
    await retireOtherRuns(db);
    await db.query("update quickjs.settings set value = 'notify' where key = 'dispatch'");
    const id = await unclaimedRun(db, 90);

    const json = await runScript("diagnose-vm-state.ts", ["dispatch", "--db", db.url!, "--json"]);
    assert.equal(json.code, 1, json.stderr);
    assert.equal(json.json!.waiting, 1);
    assert.equal(json.json!.mode, "notify");

    const human = await runScript("diagnose-vm-state.ts", ["dispatch", "--db", db.url!]);
    assert.equal(human.code, 1);
    assert.match(human.stdout, /^dispatch\s+notify$/m);
    assert.match(human.stdout, /^warning: 1 run\(s\) runnable for more than 60 s/m);

    // stuck lists nothing stuck yet (10 minutes), but warns and fails
    const stuck = await runScript("diagnose-vm-state.ts", ["stuck", "--db", db.url!]);
    assert.equal(stuck.code, 1, stuck.stdout);
    assert.match(stuck.stdout, /no stuck runs/);
    assert.match(stuck.stdout, /^warning: .*notify needs a listening worker/m);

    await runToEnd(harness(db.store), id);
    const ok = await runScript("diagnose-vm-state.ts", ["dispatch", "--db", db.url!]);
    assert.equal(ok.code, 0, ok.stdout);
    assert.match(ok.stdout, /ready runs reach an executor/);
  },
  { serverOnly: SUBPROCESS },
);
