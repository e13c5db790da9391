/**
 * The store's contract, run on each driver: postgres.js and supabase-js (through the
 * PostgREST double) against a server database, and PGlite in memory. One suite, so the
 * drivers cannot drift apart in how they encode arguments, decode results or map errors.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { openTestDb, type TestDb, type TestDbFile } from "../support/db.ts";
import { type GroupTest, openPgliteTestDb, retireOtherRuns, testGroup } from "../support/groups.ts";
import { type PostgrestDouble, postgrestDouble } from "../support/postgrest.ts";
import type { Param, Result } from "../../supabase/functions/_shared/quickjs/store/operations.ts";
import {
  at,
  claimOne,
  fakeHeader,
  fakeSnapshotBytes,
  leaseOf,
  ms,
  newTask,
  rejectsWith,
  startRun,
  T0,
  TASK_CODE,
  uniqueName,
} from "../support/runs.ts";
import {
  hasDefault,
  type Operation,
  OPERATIONS,
  paramType,
  readSnapshot,
  resolveLimits,
  restoreSnapshot,
  type SqlDriver,
  type SqlType,
  Store,
  supabaseDriver,
  takeSnapshot,
  TaskVm,
} from "../../supabase/functions/_shared/quickjs/mod.ts";

const SERVICE_ROLE_KEY = "service-role-key-for-tests";
/** Every request the PostgREST doubles served in this file, for the last test. */
const postgrestRequests: PostgrestDouble["requests"] = [];

/** supabase-js with the PostgREST double in front of this file's database. */
async function openSupabaseTestDb(): Promise<TestDbFile> {
  const file = await openTestDb("contract_supabase");
  return {
    ...file,
    async connect() {
      const db = await file.connect();
      const postgrest = postgrestDouble(db.driver, {
        serviceRoleKey: SERVICE_ROLE_KEY,
        requests: postgrestRequests,
      });
      const driver = supabaseDriver("http://supabase.test", SERVICE_ROLE_KEY, {
        fetch: postgrest.fetch,
      });
      return { ...db, driver, store: new Store(driver) };
    },
  };
}

async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Registers the contract tests, each named "[driver] …". */
function contractSuite(
  driverName: string,
  test: GroupTest,
  options: { serverOnly?: boolean | string },
) {
  const it = (
    name: string,
    fn: (db: TestDb, store: Store) => Promise<void>,
    more: { ignore?: string } = {},
  ) => test(`[${driverName}] ${name}`, (db) => fn(db, db.store), { ...options, ...more });

  // ---- the declarations --------------------------------------------------------------------

  it(
    "every operation in OPERATIONS is one SQL function with exactly its parameter names, types and result",
    async (db) => {
      const sqlTypeName: Record<SqlType | "void", string> = {
        text: "text",
        uuid: "uuid",
        jsonb: "jsonb",
        int: "integer",
        bigint: "bigint",
        boolean: "boolean",
        timestamptz: "timestamp with time zone",
        "text[]": "text[]",
        bytea: "bytea",
        void: "void",
      };
      const functions = await db.query<{
        name: string;
        args: { name: string; type: string }[];
        returns: string;
        set: boolean;
        defaults: number;
        columns: { name: string; type: string }[];
      }>(
        `select p.proname as name,
                coalesce((select jsonb_agg(jsonb_build_object('name', a.name,
                            'type', format_type(a.type, null)) order by a.n)
                          from unnest(p.proargnames[1:p.pronargs], p.proargtypes::oid[])
                            with ordinality as a(name, type, n)), '[]') as args,
                format_type(p.prorettype, null) as returns, p.proretset as set,
                p.pronargdefaults::int as defaults,
                coalesce((select jsonb_agg(jsonb_build_object('name', a.name,
                            'type', format_type(a.type, null)) order by a.n)
                          from unnest(p.proargnames, p.proallargtypes, p.proargmodes::text[])
                            with ordinality as a(name, type, mode, n)
                          where a.mode = 't'), '[]') as columns
         from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where n.nspname = 'quickjs' and p.proname = any(string_to_array($1::text, ','))`,
        // one text, not a JS array: postgres.js sends an array as "a,b" text until it has
        // loaded the server's array types, and that failed the test now and then
        [Object.keys(OPERATIONS).join(",")],
      );
      for (const [op, declared] of Object.entries(OPERATIONS)) {
        const found = functions.filter((f) => f.name === op);
        assert.equal(found.length, 1, `quickjs.${op} exists exactly once (no overloads)`);
        const fn = found[0]!;
        const expected = Object.fromEntries(
          Object.entries(declared.params as Record<string, Param>).map(([name, param]) => [
            name,
            sqlTypeName[paramType(param)],
          ]),
        );
        const actual = Object.fromEntries(fn.args.map((a) => [a.name, a.type]));
        assert.deepEqual(actual, expected, `the parameters of quickjs.${op}`);
        assert.deepEqual(
          Object.entries(declared.params as Record<string, Param>)
            .filter(([, param]) => hasDefault(param)).map(([name]) => name),
          fn.args.slice(fn.args.length - fn.defaults).map((a) => a.name),
          `the parameters of quickjs.${op} that have a default`,
        );
        const returns: Result = declared.returns;
        if (returns.kind === "scalar") {
          assert.deepEqual(
            [fn.returns, fn.set],
            [sqlTypeName[returns.sql], false],
            `quickjs.${op} returns one ${returns.sql}`,
          );
        } else {
          assert.equal(fn.set, true, `quickjs.${op} returns a table`);
          assert.deepEqual(
            Object.fromEntries(fn.columns.map((c) => [c.name, c.type])),
            returns.columns,
            `the columns quickjs.${op} returns`,
          );
        }
      }
    },
  );

  it("every operation's result arrives in its declared shape", async (_db, store) => {
    // drives each operation once through the store's driver and checks what comes back
    // against OPERATIONS[op].returns: jsonb as JSON (never bytes or JSON text), int and
    // boolean as such, void as undefined, table rows with exactly the declared columns
    const seen = new Map<string, unknown[]>();
    const spy: SqlDriver = {
      ...store.driver,
      async call(op, args) {
        const result = await store.driver.call(op, args);
        seen.set(op, [...seen.get(op) ?? [], result]);
        return result;
      },
    };
    const s = new Store(spy);
    const task = uniqueName("shapes");
    await s.publishTask({ name: task, code: TASK_CODE });
    const queued = await s.enqueueRun({ task, input: 1, now: T0 });
    const [run] = await s.claimRuns({ worker: "w", runId: queued.id, leaseSeconds: 30, now: T0 });
    assert.ok(run);
    await s.heartbeat(leaseOf(run), 30, T0);
    await s.appendLogs(leaseOf(run), [{ level: "log", message: "x", at: T0.getTime() }]);
    await s.recordCall(leaseOf(run), {
      seq: 1,
      service: "sleep",
      path: [],
      args: [1],
      mode: "durable",
      wakeAt: at(10),
    }, T0);
    await s.settleCall(leaseOf(run), { seq: 1, ok: true, result: null }, T0);
    await s.recordCall(leaseOf(run), {
      seq: 4,
      service: "svc",
      path: ["m"],
      args: [],
      mode: "inline",
      wakeAt: null,
    }, T0);
    // sha256("t")
    const tHash = "e3b98a4da31a127d4bde6e43033f66ba274cab0eb7eb1c70ec41402bf6273dd8";
    await s.issueCompletion(leaseOf(run), 4, tHash, T0);
    await s.completionSent(leaseOf(run), 4, at(60), T0);
    await s.heartbeatCall({ runId: run.id, seq: 4, token: "t", details: { n: 1 } }, T0);
    await s.completeCall({ runId: run.id, seq: 4, token: "t", result: 1 }, T0);
    await s.expireCompletions(T0);
    await s.recordCall(leaseOf(run), {
      seq: 5,
      service: "svc",
      path: ["m"],
      args: [],
      mode: "inline",
    }, T0);
    await s.retryCall(leaseOf(run), { seq: 5, error: { code: "E" }, wakeAt: at(5) }, T0);
    await s.recordSettledCall(leaseOf(run), {
      seq: 6,
      service: "step",
      path: ["run"],
      args: [1],
      ok: true,
      result: 10,
      startedAt: T0,
    }, T0);
    await s.kvCall(leaseOf(run), {
      seq: 2,
      op: "set",
      key: "shape",
      value: 1,
      secret: false,
      args: ["shape", 1],
    }, T0);
    const child = await s.startChild(leaseOf(run), { seq: 3, task, input: 2 }, T0);
    await s.suspendRun(leaseOf(run), {
      snapshot: fakeSnapshotBytes(64),
      header: fakeHeader([3], 3),
      wakeAt: null,
      waitingOn: { calls: [3], children: [child.childRunId!] },
    }, T0);
    await s.getSnapshot(run.id);
    await s.getRun(run.id);
    await s.listCalls(run.id);
    await s.findStuckRuns(T0);
    await s.nextWakeAt(T0);
    await s.requeueExpiredLeases(T0);
    await s.tick(T0);
    await s.dispatchHealth({ now: T0 });
    await s.announceRun(queued.id);
    await s.kvSet("shape", 1);
    await s.kvGet("shape");
    await s.kvDelete("shape");
    await s.getService("no_such_service");
    await s.repairRun(run.id, T0);
    await s.listSnapshots(1);
    const [resumed] = await s.claimRuns({
      worker: "w",
      runId: child.childRunId!,
      leaseSeconds: 30,
      now: T0,
    });
    assert.ok(resumed);
    await s.completeRun(leaseOf(resumed), 4, [], T0);
    const other = await s.enqueueRun({ task, input: 3, now: T0 });
    const [failing] = await s.claimRuns({
      worker: "w",
      runId: other.id,
      leaseSeconds: 30,
      now: T0,
    });
    await s.failRun(leaseOf(failing!), { code: "E", name: "E", message: "e" }, [], T0);
    await s.cancelRun(run.id, { now: T0 });
    await s.claimRuns({ worker: "w", runId: crypto.randomUUID(), leaseSeconds: 30, now: T0 });
    await s.getSnapshot(crypto.randomUUID());

    assert.deepEqual(
      [...seen.keys()].sort(),
      Object.keys(OPERATIONS).sort(),
      "every operation ran",
    );
    for (
      const [op, result] of [...seen].flatMap(([op, results]) =>
        results.map((r) => [op, r] as const)
      )
    ) {
      const returns: Result = OPERATIONS[op as Operation].returns;
      if (returns.kind === "rows") {
        assert.ok(Array.isArray(result), `${op} returns rows`);
        for (const row of result as Record<string, unknown>[]) {
          assert.deepEqual(Object.keys(row).sort(), Object.keys(returns.columns).sort(), op);
          for (const [column, type] of Object.entries(returns.columns)) {
            const value = row[column];
            if (type === "bytea") {
              assert.ok(
                value === null || (value instanceof Uint8Array && !Buffer.isBuffer(value)),
                `${op}.${column} is a Uint8Array or null`,
              );
            } else {
              assert.ok(
                typeof value === "object" && !(value instanceof Uint8Array),
                `${op}.${column} is decoded JSON`,
              );
            }
          }
        }
        continue;
      }
      const kind = result === null ? "null" : Array.isArray(result) ? "array" : typeof result;
      const allowed = {
        jsonb: ["object", "array", "null"],
        int: ["number"],
        boolean: ["boolean"],
        void: ["undefined"],
      }[returns.sql];
      assert.ok(allowed.includes(kind), `${op} returned ${kind}, declared ${returns.sql}`);
      if (returns.sql === "int") assert.ok(Number.isInteger(result), op);
    }
    const [claimedRows, ...more] = seen.get("claim_runs") as { snapshot: unknown }[][];
    assert.equal(claimedRows!.length, 1);
    assert.equal(claimedRows![0]!.snapshot, null, "a first claim has no snapshot");
    assert.deepEqual(more.at(-1), [], "an unknown run claims nothing");
    const [saved, unknown] = seen.get("get_snapshot") as { bytes: Uint8Array }[][];
    assert.deepEqual(saved![0]!.bytes, fakeSnapshotBytes(64));
    assert.deepEqual(unknown, [], "an unknown run has no snapshot row");
  });

  // ---- publishTask ------------------------------------------------------------------------

  it(
    "publishTask bumps the version only when code, limits or allowed tools change",
    async (db, store) => {
      const name = uniqueName("publish");
      const code = "export default async () => 1";
      const v1 = await store.publishTask({ name, code });
      assert.equal(v1.name, name);
      assert.equal(v1.version, 1);
      assert.equal(v1.changed, true);
      assert.equal(v1.codeSha256, await sha256Hex(code));

      const same = await store.publishTask({ name, code });
      assert.deepEqual(same, { ...v1, changed: false });
      const described = await store.publishTask({ name, code, description: "returns one" });
      assert.deepEqual([described.version, described.changed], [1, false]);

      const steps = [
        { code: "export default async () => 2" },
        { code: "export default async () => 2", limits: { sliceMs: 500 } },
        { code: "export default async () => 2", limits: { sliceMs: 500 }, allowedTools: ["kv"] },
        { code: "export default async () => 2", limits: { sliceMs: 500 }, allowedTools: null },
      ];
      const versions = [];
      for (const step of steps) {
        const first = await store.publishTask({ name, ...step });
        const again = await store.publishTask({ name, ...step });
        assert.equal(first.id, v1.id);
        assert.equal(first.changed, true, `publishing ${JSON.stringify(step)} should change`);
        assert.equal(again.changed, false, `publishing ${JSON.stringify(step)} twice should not`);
        assert.equal(again.version, first.version);
        versions.push(first.version);
      }
      assert.deepEqual(versions, [2, 3, 4, 5]);
      const rows = await db.query<{ version: number; allowed_tools: string[] | null }>(
        `select v.version, v.allowed_tools from quickjs.task_versions v
       join quickjs.tasks t on t.id = v.task_id where t.name = $1 order by v.version`,
        [name],
      );
      assert.deepEqual(rows.map((r) => r.version), [1, 2, 3, 4, 5]);
      assert.deepEqual(rows[3]!.allowed_tools, ["kv"]);
      const [task] = await db.query<{ latest_version: number; description: string }>(
        "select latest_version, description from quickjs.tasks where name = $1",
        [name],
      );
      assert.deepEqual(task, { latest_version: 5, description: "returns one" });
    },
  );

  // ---- enqueueRun -------------------------------------------------------------------------

  it(
    "enqueueRun queues a run of the task's latest version, by name or by id",
    async (_db, store) => {
      const task = uniqueName("enqueue");
      await store.publishTask({ name: task, code: "export default async () => 1" });
      const { id: taskId } = await store.publishTask({ name: task, code: TASK_CODE });
      const input = { users: ["ada", "grace"], n: 2.5, nested: { ok: true, list: [] }, s: "é✓" };
      const byName = await store.enqueueRun({ task, input, now: T0 });
      assert.equal(byName.status, "queued");
      assert.equal(byName.task, task);
      assert.equal(byName.taskId, taskId);
      assert.equal(byName.taskVersion, 2);
      assert.deepEqual(byName.input, input);
      assert.equal(byName.created, true);
      assert.equal(byName.attempts, 1, "the first attempt");
      assert.equal(byName.invocations, 0, "not yet claimed");
      assert.equal(ms(byName.createdAt), T0.getTime());

      const byId = await store.enqueueRun({ taskId, input: "just a string", now: T0 });
      assert.notEqual(byId.id, byName.id);
      assert.equal(byId.task, task);
      assert.equal(byId.input, "just a string");
      const fetched = await store.getRun(byName.id);
      assert.deepEqual(fetched?.input, input);
    },
  );

  // BUG (migration 20261124080100_quickjs_transitions, quickjs.run_json and quickjs.call_json): jsonb_strip_nulls
  // is recursive, so null fields inside the input and inside call args are removed, and a
  // JSON null input disappears. The task then runs on other input than it was given, and a
  // parked call re-executed from claimRuns().calls sends other args (and record_call then
  // sees "a different call" and replaces the journal entry). See the report for the fix.
  it(
    "a run's input comes back from enqueueRun, getRun and claimRuns unchanged, nulls included",
    async (_db, store) => {
      const task = await newTask(store);
      const input = { a: null, nested: { b: null, list: [null, { c: null }] } };
      const run = await store.enqueueRun({ task, input, now: T0 });
      assert.deepEqual(run.input, input);
      assert.deepEqual((await store.getRun(run.id))?.input, input);
      assert.deepEqual((await claimOne(store, run.id, T0)).input, input);
      const nullInput = await store.enqueueRun({ task, input: null, now: T0 });
      const claimed = await claimOne(store, nullInput.id, T0);
      assert.ok("input" in claimed && claimed.input === null, "a JSON null input stays null");
    },
  );

  it(
    "a parked call's args come back from claimRuns and listCalls unchanged, nulls included",
    async (_db, store) => {
      const run = await startRun(store);
      const args = [{ filter: null, page: { token: null, size: 10 } }, null];
      await store.recordCall(leaseOf(run), {
        seq: 1,
        service: "gapi",
        path: ["users", "list"],
        args,
        mode: "durable",
      }, at(1));
      await store.suspendRun(leaseOf(run), {
        snapshot: fakeSnapshotBytes(10),
        header: fakeHeader([1], 1),
        wakeAt: at(2),
        waitingOn: { calls: [1] },
      }, at(1));
      assert.deepEqual((await store.listCalls(run.id))[0]?.args, args);
      const resumed = await claimOne(store, run.id, at(2));
      assert.deepEqual(resumed.calls[0]?.args, args);
      const again = await store.recordCall(leaseOf(resumed), {
        seq: 1,
        service: "gapi",
        path: ["users", "list"],
        args: resumed.calls[0]!.args,
        mode: "inline",
      }, at(3));
      assert.equal(ms(again.createdAt), at(1).getTime(), "the same call, not a replacement");
    },
  );

  it(
    "a run keeps the task version it was created with when a new version is published",
    async (_db, store) => {
      const task = uniqueName("pinned");
      await store.publishTask({ name: task, code: "export default async () => 'v1'" });
      const old = await store.enqueueRun({ task, input: 1, now: T0 });
      await store.publishTask({ name: task, code: "export default async () => 'v2'" });
      const fresh = await store.enqueueRun({ task, input: 1, now: T0 });
      const claimedOld = await claimOne(store, old.id, T0);
      const claimedNew = await claimOne(store, fresh.id, T0);
      assert.deepEqual([claimedOld.taskVersion, claimedOld.code], [
        1,
        "export default async () => 'v1'",
      ]);
      assert.deepEqual([claimedNew.taskVersion, claimedNew.code], [
        2,
        "export default async () => 'v2'",
      ]);
    },
  );

  it(
    "enqueueRun with the same idempotency key and input returns the same run with created false",
    async (db, store) => {
      const task = await newTask(store);
      const first = await store.enqueueRun({ task, input: { a: 1 }, idempotencyKey: "k-1" });
      assert.equal(first.created, true);
      assert.equal(first.idempotencyKey, "k-1");
      const again = await store.enqueueRun({ task, input: { a: 1 }, idempotencyKey: "k-1" });
      assert.equal(again.id, first.id);
      assert.equal(again.created, false);
      const other = await store.enqueueRun({ task, input: { a: 1 }, idempotencyKey: "k-2" });
      assert.notEqual(other.id, first.id);
      const [row] = await db.query<{ n: number }>(
        "select count(*)::int as n from quickjs.runs where task_name = $1",
        [task],
      );
      assert.equal(row!.n, 2);
    },
  );

  it(
    "enqueueRun with the same idempotency key and another input fails with IDEMPOTENCY_CONFLICT (409)",
    async (_db, store) => {
      const task = await newTask(store);
      const ownerId = crypto.randomUUID();
      await store.enqueueRun({ task, input: { a: 1 }, idempotencyKey: "k", ownerId });
      await rejectsWith(
        store.enqueueRun({ task, input: { a: 2 }, idempotencyKey: "k", ownerId }),
        "IDEMPOTENCY_CONFLICT",
        409,
      );
    },
  );

  it(
    "a user who reuses another user's idempotency key gets a run of their own, and no 409 names the other user's run",
    async (db, store) => {
      const task = await newTask(store);
      const alice = crypto.randomUUID();
      const mallory = crypto.randomUUID();
      // mallory claims the key first: alice's run is still hers, created, with her input
      const squatted = await store.enqueueRun({
        task,
        input: { evil: true },
        idempotencyKey: "order-42",
        ownerId: mallory,
      });
      const mine = await store.enqueueRun({
        task,
        input: { a: 1 },
        idempotencyKey: "order-42",
        ownerId: alice,
      });
      assert.equal(mine.created, true);
      assert.notEqual(mine.id, squatted.id);
      assert.deepEqual(mine.input, { a: 1 });
      const service = await store.enqueueRun({ task, input: 1, idempotencyKey: "order-42" });
      assert.equal(service.created, true);
      // a conflict within one owner names only that owner's run
      const conflict = await store.enqueueRun({
        task,
        input: { evil: false },
        idempotencyKey: "order-42",
        ownerId: mallory,
      }).then(() => null, (e: Error) => e);
      assert.ok(conflict, "the same owner's key with another input conflicts");
      assert.ok(!conflict.message.includes(mine.id), conflict.message);
      assert.ok(conflict.message.includes(squatted.id), conflict.message);
      const [row] = await db.query<{ n: number }>(
        "select count(*)::int as n from quickjs.runs where task_name = $1",
        [task],
      );
      assert.equal(row!.n, 3);
    },
  );

  it("enqueueRun of an unknown task fails with TASK_NOT_FOUND (404)", async (_db, store) => {
    await rejectsWith(
      store.enqueueRun({ task: uniqueName("missing"), input: {} }),
      "TASK_NOT_FOUND",
      404,
    );
    await rejectsWith(
      store.enqueueRun({ taskId: crypto.randomUUID(), input: {} }),
      "TASK_NOT_FOUND",
      404,
    );
  });

  // ---- claimRuns --------------------------------------------------------------------------

  it(
    "claimRuns leases due runs up to the limit, each with a new fencing token",
    async (db, store) => {
      await retireOtherRuns(db);
      const task = uniqueName("claim");
      await store.publishTask({
        name: task,
        code: TASK_CODE,
        limits: { sliceMs: 250 },
        allowedTools: ["kv", "tasks"],
      });
      const ids = [];
      for (let i = 0; i < 3; i++) {
        ids.push((await store.enqueueRun({ task, input: { i }, now: at(i) })).id);
      }
      const first = await store.claimRuns({
        worker: "w-a",
        limit: 2,
        leaseSeconds: 30,
        now: at(5),
      });
      assert.deepEqual(first.map((r) => r.id), ids.slice(0, 2), "oldest first, at most the limit");
      for (const run of first) {
        assert.equal(run.status, "running");
        assert.equal(run.leaseOwner, "w-a");
        assert.equal(ms(run.leaseExpiresAt), at(35).getTime());
        assert.equal(ms(run.startedAt), at(5).getTime());
        assert.equal(run.attempts, 1);
        assert.equal(run.invocations, 1);
        assert.equal(typeof run.fencingToken, "number");
        assert.equal(run.code, TASK_CODE);
        assert.deepEqual(run.limits, { sliceMs: 250 });
        assert.deepEqual(run.allowedTools, ["kv", "tasks"]);
        assert.equal(run.snapshot, null);
        assert.ok(!("snapshotHeader" in run), "the header is read from the bytes, not sent twice");
        assert.deepEqual(run.calls, []);
      }
      assert.notEqual(first[0]!.fencingToken, first[1]!.fencingToken);
      const second = await store.claimRuns({
        worker: "w-b",
        limit: 2,
        leaseSeconds: 30,
        now: at(5),
      });
      assert.deepEqual(second.map((r) => r.id), [ids[2]]);
      assert.ok(second[0]!.fencingToken > first[1]!.fencingToken);
      assert.deepEqual(
        await store.claimRuns({ worker: "w-c", limit: 2, leaseSeconds: 30, now: at(5) }),
        [],
      );
    },
  );

  it("claimRuns leaves a run alone until its run time", async (_db, store) => {
    const task = await newTask(store);
    const run = await store.enqueueRun({ task, input: 1, runAt: at(60), now: T0 });
    assert.deepEqual(
      await store.claimRuns({ worker: "w", runId: run.id, leaseSeconds: 30, now: at(59) }),
      [],
    );
    const claimed = await claimOne(store, run.id, at(60));
    assert.equal(claimed.status, "running");
  });

  it("claimRuns with a runId claims that run and no other", async (_db, store) => {
    const task = await newTask(store);
    const older = await store.enqueueRun({ task, input: 1, now: T0 });
    const wanted = await store.enqueueRun({ task, input: 2, now: at(1) });
    const claimed = await store.claimRuns({
      worker: "w",
      runId: wanted.id,
      limit: 5,
      leaseSeconds: 30,
      now: at(2),
    });
    assert.deepEqual(claimed.map((r) => r.id), [wanted.id]);
    assert.equal((await store.getRun(older.id))?.status, "queued");
  });

  // ---- heartbeat --------------------------------------------------------------------------

  it("heartbeat extends the lease of the worker holding the current token", async (_db, store) => {
    const run = await startRun(store, T0, { leaseSeconds: 30 });
    const beat = await store.heartbeat(leaseOf(run), 45, at(20));
    assert.equal(ms(beat.leaseExpiresAt), at(65).getTime());
    assert.equal(ms((await store.getRun(run.id))?.leaseExpiresAt), at(65).getTime());
    await rejectsWith(
      store.heartbeat({ runId: run.id, token: run.fencingToken + 1000 }, 45, at(21)),
      "STALE_LEASE",
      409,
    );
    await rejectsWith(
      store.heartbeat({ runId: crypto.randomUUID(), token: run.fencingToken }, 45, at(21)),
      "RUN_NOT_FOUND",
      404,
    );
  });

  // ---- recordCall -------------------------------------------------------------------------

  it(
    "recordCall journals an inline call as started and a durable one as pending",
    async (_db, store) => {
      const run = await startRun(store);
      const inline = await store.recordCall(leaseOf(run), {
        seq: 1,
        service: "kv",
        path: ["get"],
        args: ["key", { deep: [1, "two"] }],
        mode: "inline",
      }, at(1));
      assert.equal(inline.seq, 1);
      assert.equal(inline.service, "kv");
      assert.deepEqual(inline.path, ["get"]);
      assert.deepEqual(inline.args, ["key", { deep: [1, "two"] }]);
      assert.equal(inline.mode, "inline");
      assert.equal(inline.status, "started");
      assert.equal(inline.attempts, 1);
      assert.equal(inline.idempotencyKey, `${run.id}:1`);
      assert.equal(inline.replayed, false);
      assert.equal(ms(inline.startedAt), at(1).getTime());

      const durable = await store.recordCall(leaseOf(run), {
        seq: 2,
        service: "sleep",
        path: [],
        args: [3_600_000],
        mode: "durable",
        wakeAt: at(3601),
      }, at(1));
      assert.equal(durable.status, "pending");
      assert.equal(durable.attempts, 0);
      assert.deepEqual(durable.path, []);
      assert.equal(ms(durable.wakeAt), at(3601).getTime());
    },
  );

  it(
    "recordCall of a settled call returns the journaled outcome with replayed true",
    async (_db, store) => {
      const run = await startRun(store);
      const call = { service: "gapi", path: ["users", "list"], args: [{ d: "x" }], mode: "inline" };
      await store.recordCall(leaseOf(run), { seq: 1, ...call } as never, at(1));
      await store.settleCall(leaseOf(run), { seq: 1, ok: true, result: { users: 3 } }, at(2));
      await store.recordCall(leaseOf(run), { seq: 2, ...call } as never, at(3));
      await store.settleCall(leaseOf(run), {
        seq: 2,
        ok: false,
        error: { code: "E", name: "Error", message: "no" },
      }, at(4));

      const again = await claimOne(store, run.id, at(100)); // the old lease expired at 30 s
      const ok = await store.recordCall(leaseOf(again), { seq: 1, ...call } as never, at(101));
      assert.equal(ok.replayed, true);
      assert.equal(ok.status, "succeeded");
      assert.deepEqual(ok.result, { users: 3 });
      assert.equal(ok.attempts, 1, "a settled call is not executed again");
      const failed = await store.recordCall(leaseOf(again), { seq: 2, ...call } as never, at(101));
      assert.equal(failed.replayed, true);
      assert.equal(failed.status, "failed");
      assert.deepEqual(failed.error, { code: "E", name: "Error", message: "no" });
    },
  );

  it(
    "recordSettledCall journals a call and its outcome in one write; recordCall then replays it",
    async (_db, store) => {
      const run = await startRun(store);
      const call = { service: "step", path: ["run"], args: [7] };
      const settled = await store.recordSettledCall(leaseOf(run), {
        seq: 1,
        ...call,
        ok: true,
        result: 70,
        startedAt: at(1),
      }, at(2));
      assert.equal(settled.status, "succeeded");
      assert.equal(settled.mode, "inline");
      assert.equal(settled.attempts, 1);
      assert.equal(settled.idempotencyKey, `${run.id}:1`, "the key record_call would give");
      assert.deepEqual(settled.result, 70);
      assert.equal(ms(settled.startedAt), at(1).getTime());
      assert.equal(ms(settled.completedAt), at(2).getTime());
      const failed = await store.recordSettledCall(leaseOf(run), {
        seq: 2,
        ...call,
        ok: false,
        error: { code: "E", name: "Error", message: "no" },
      }, at(3));
      assert.equal(failed.status, "failed");
      assert.deepEqual(failed.error, { code: "E", name: "Error", message: "no" });

      const again = await claimOne(store, run.id, at(100)); // the old lease expired at 30 s
      const replay = await store.recordCall(
        leaseOf(again),
        { seq: 1, ...call, mode: "inline" },
        at(101),
      );
      assert.equal(replay.replayed, true, "a settled call is never executed again");
      assert.deepEqual(replay.result, 70);
      await rejectsWith(
        store.recordSettledCall(leaseOf(run), { seq: 3, ...call, ok: true, result: 1 }, at(101)),
        "STALE_LEASE",
        409,
      );
    },
  );

  it(
    "recordCall of an unsettled inline call starts it again with the same idempotency key",
    async (_db, store) => {
      const run = await startRun(store);
      const call = { seq: 1, service: "http", path: ["fetch"], args: ["https://x"] };
      const first = await store.recordCall(leaseOf(run), { ...call, mode: "inline" }, at(1));
      const again = await claimOne(store, run.id, at(100));
      const retried = await store.recordCall(leaseOf(again), { ...call, mode: "inline" }, at(101));
      assert.equal(retried.replayed, false);
      assert.equal(retried.status, "started");
      assert.equal(retried.attempts, 2);
      assert.equal(retried.idempotencyKey, first.idempotencyKey);
      assert.equal(ms(retried.startedAt), at(101).getTime());
    },
  );

  it(
    "recordCall of a different call at the same seq replaces the journaled one",
    async (_db, store) => {
      const run = await startRun(store);
      await store.recordCall(leaseOf(run), {
        seq: 1,
        service: "kv",
        path: ["get"],
        args: ["a"],
        mode: "inline",
      }, at(1));
      const replaced = await store.recordCall(leaseOf(run), {
        seq: 1,
        service: "http",
        path: ["fetch"],
        args: ["https://example.com"],
        mode: "inline",
      }, at(2));
      assert.equal(replaced.service, "http");
      assert.equal(replaced.attempts, 1);
      assert.equal(replaced.replayed, false);
      const calls = await store.listCalls(run.id);
      assert.deepEqual(calls.map((c) => [c.seq, c.service]), [[1, "http"]]);
      const logs = (await store.getRun(run.id))?.logs ?? [];
      assert.ok(
        logs.some((l) => l.level === "system" && /call 1 is now http\.fetch/.test(l.message)),
        `a system log should say the call changed: ${JSON.stringify(logs)}`,
      );
    },
  );

  // ---- startChild -------------------------------------------------------------------------

  it("startChild enqueues a child run linked to the parent's call", async (_db, store) => {
    const child = await newTask(store, "child");
    const parent = await startRun(store);
    const call = await store.startChild(leaseOf(parent), {
      seq: 1,
      task: child,
      input: { k: [1, 2] },
    }, at(1));
    assert.equal(call.service, "tasks");
    assert.deepEqual(call.path, ["execute"]);
    assert.deepEqual(call.args, [child, { k: [1, 2] }]);
    assert.equal(call.mode, "durable");
    assert.equal(call.status, "pending");
    assert.equal(call.replayed, false);
    assert.ok(call.childRunId);
    const childRun = await store.getRun(call.childRunId);
    assert.equal(childRun?.status, "queued");
    assert.equal(childRun?.task, child);
    assert.deepEqual(childRun?.input, { k: [1, 2] });
    assert.equal(childRun?.parentRunId, parent.id);
    assert.equal(childRun?.parentCallSeq, 1);

    const again = await store.startChild(leaseOf(parent), {
      seq: 1,
      task: child,
      input: { k: [1, 2] },
    }, at(2));
    assert.equal(again.childRunId, call.childRunId, "the same call does not start a second child");
  });

  it(
    "startChild of an unknown task fails the call at once with TASK_NOT_FOUND",
    async (db, store) => {
      const parent = await startRun(store);
      const missing = uniqueName("missing");
      const call = await store.startChild(
        leaseOf(parent),
        { seq: 1, task: missing, input: 1 },
        at(1),
      );
      assert.equal(call.status, "failed");
      assert.equal(call.error?.code, "TASK_NOT_FOUND");
      assert.match(call.error?.message ?? "", new RegExp(missing));
      assert.equal(call.childRunId, undefined);
      const [row] = await db.query<{ n: number }>(
        "select count(*)::int as n from quickjs.runs where parent_run_id = $1",
        [parent.id],
      );
      assert.equal(row!.n, 0);
    },
  );

  // ---- settleCall, appendLogs, getRun -----------------------------------------------------

  it("settleCall records the first outcome and keeps it against later ones", async (_db, store) => {
    const run = await startRun(store);
    await store.recordCall(leaseOf(run), {
      seq: 1,
      service: "kv",
      path: ["get"],
      args: ["a"],
      mode: "inline",
    }, at(1));
    const first = await store.settleCall(leaseOf(run), {
      seq: 1,
      ok: true,
      result: { value: 42 },
    }, at(2));
    assert.equal(first.status, "succeeded");
    assert.deepEqual(first.result, { value: 42 });
    assert.equal(ms(first.completedAt), at(2).getTime());
    const second = await store.settleCall(leaseOf(run), {
      seq: 1,
      ok: false,
      error: { code: "LATE", name: "Error", message: "too late" },
    }, at(3));
    assert.equal(second.status, "succeeded");
    assert.deepEqual(second.result, { value: 42 });
    assert.equal(second.error, undefined);
    const [stored] = await store.listCalls(run.id);
    assert.deepEqual([stored?.status, stored?.result], ["succeeded", { value: 42 }]);
    await rejectsWith(
      store.settleCall(leaseOf(run), { seq: 9, ok: true, result: 1 }, at(4)),
      "CALL_NOT_FOUND",
      404,
    );
  });

  it(
    "appendLogs adds lines that getRun returns in order, with their attempt",
    async (_db, store) => {
      const run = await startRun(store);
      await store.appendLogs(leaseOf(run), [
        { level: "log", message: "first", at: at(1).getTime() },
        { level: "warn", message: "second ✓", at: at(2).getTime() },
      ]);
      await store.appendLogs(leaseOf(run), [{
        level: "error",
        message: "third",
        at: at(3).getTime(),
      }]);
      const view = await store.getRun(run.id);
      assert.deepEqual(
        view?.logs?.map((l) => [l.level, l.message, ms(String(l.at)), l.attempt]),
        [
          ["log", "first", at(1).getTime(), 1],
          ["warn", "second ✓", at(2).getTime(), 1],
          ["error", "third", at(3).getTime(), 1],
        ],
      );
      // the last lines: what an operator looking at a long run wants
      const limited = await store.getRun(run.id, { logLimit: 2 });
      assert.deepEqual(limited?.logs?.map((l) => l.message), ["second ✓", "third"]);
      await rejectsWith(
        store.appendLogs({ runId: run.id, token: run.fencingToken - 1 }, [
          { level: "log", message: "x", at: 0 },
        ]),
        "STALE_LEASE",
        409,
      );
    },
  );

  it("getRun returns null for an unknown run and for another owner's run", async (_db, store) => {
    const task = await newTask(store);
    const owner = crypto.randomUUID();
    const run = await store.enqueueRun({ task, input: 1, ownerId: owner });
    assert.equal((await store.getRun(run.id, { ownerId: owner }))?.id, run.id);
    assert.equal((await store.getRun(run.id))?.ownerId, owner);
    assert.equal(await store.getRun(run.id, { ownerId: crypto.randomUUID() }), null);
    assert.equal(await store.getRun(crypto.randomUUID()), null);
  });

  it("listCalls returns the journal in seq order", async (_db, store) => {
    const run = await startRun(store);
    for (const seq of [3, 1, 2]) {
      await store.recordCall(leaseOf(run), {
        seq,
        service: "kv",
        path: ["get"],
        args: [`k${seq}`],
        mode: "inline",
      }, at(seq));
    }
    const calls = await store.listCalls(run.id);
    assert.deepEqual(calls.map((c) => [c.seq, c.args[0]]), [[1, "k1"], [2, "k2"], [3, "k3"]]);
    assert.deepEqual(await store.listCalls(crypto.randomUUID()), []);
  });

  // ---- suspendRun -------------------------------------------------------------------------

  it(
    "suspendRun saves the snapshot and claimRuns and getSnapshot return its bytes exactly",
    async (_db, store) => {
      const run = await startRun(store);
      await store.recordCall(leaseOf(run), {
        seq: 1,
        service: "kv",
        path: ["get"],
        args: ["a"],
        mode: "inline",
      }, at(1));
      await store.settleCall(leaseOf(run), { seq: 1, ok: true, result: "A" }, at(1));
      await store.recordCall(leaseOf(run), {
        seq: 2,
        service: "sleep",
        path: [],
        args: [3_600_000],
        mode: "durable",
        wakeAt: at(3602),
      }, at(2));
      const bytes = fakeSnapshotBytes();
      const header = fakeHeader([2], 2);
      const suspended = await store.suspendRun(leaseOf(run), {
        snapshot: bytes,
        header,
        wakeAt: at(3602),
        waitingOn: { calls: [2], wakeAt: at(3602).toISOString() },
        logs: [{ level: "info", message: "parked", at: at(2).getTime() }],
      }, at(2));
      assert.equal(suspended.status, "suspended");
      assert.equal(ms(suspended.wakeAt), at(3602).getTime());
      assert.deepEqual(suspended.waitingOn?.calls, [2]);
      assert.equal(suspended.suspensions, 1);
      assert.equal(suspended.leaseOwner, undefined);

      const saved = await store.getSnapshot(run.id);
      assert.ok(saved);
      assert.deepEqual(saved.bytes, bytes);
      assert.ok(saved.bytes instanceof Uint8Array && !Buffer.isBuffer(saved.bytes));
      assert.deepEqual(
        [saved.runId, saved.format, saved.wasmSha256, saved.memoryBytes, saved.lastCallId],
        [run.id, header.format, header.wasmSha256, header.memoryBytes, header.lastCallId],
        "the columns derived from the header",
      );
      assert.equal(saved.sizeBytes, bytes.length);
      assert.deepEqual(
        await store.claimRuns({ worker: "w", runId: run.id, leaseSeconds: 30, now: at(3601) }),
        [],
        "not due before its wake time",
      );
      const resumed = await claimOne(store, run.id, at(3602), { worker: "w-2" });
      assert.deepEqual(resumed.snapshot, bytes);
      assert.equal(resumed.invocations, 2, "each claim is an invocation");
      assert.equal(resumed.attempts, 1, "a resume is not a new attempt");
      assert.ok(resumed.fencingToken > run.fencingToken);
      assert.deepEqual(
        resumed.calls.map((c) => [c.seq, c.status]),
        [[2, "pending"]],
        "the parked call, not the settled one the VM already holds",
      );
      assert.equal(await store.getSnapshot(crypto.randomUUID()), null);
    },
  );

  it(
    "a real VM snapshot saved by suspendRun restores from claimRuns and finishes the task",
    async (_db, store) => {
      const task = uniqueName("real-snapshot");
      const code = `export default async function (input) {
      const seen = [];
      for (const k of input.keys) seen.push(await tools.kv.get(k));
      return { seen, closure: (() => input.keys.length * 10)() };
    }`;
      await store.publishTask({ name: task, code });
      const run = await startRun(store, T0, { task, input: { keys: ["a", "b"] } });

      const vm = await TaskVm.create({ limits: resolveLimits(run.limits) });
      let snapshot;
      try {
        const state = vm.start({ code: run.code, filename: `${task}.js` }, run.input, {
          runId: run.id,
          task,
          attempt: run.attempts,
        });
        assert.deepEqual(state, { kind: "parked", calls: [1] });
        const [call] = vm.takeCalls();
        assert.deepEqual([call?.service, call?.path, call?.args], ["kv", ["get"], ["a"]]);
        snapshot = await takeSnapshot(vm, { runId: run.id });
      } finally {
        vm.dispose();
      }
      await store.recordCall(leaseOf(run), {
        seq: 1,
        service: "kv",
        path: ["get"],
        args: ["a"],
        mode: "durable",
      }, at(1));
      await store.settleCall(leaseOf(run), { seq: 1, ok: true, result: "value of a" }, at(2));
      const view = await store.suspendRun(leaseOf(run), {
        snapshot: snapshot.bytes,
        header: snapshot.header,
        wakeAt: null,
        waitingOn: { calls: [1] },
      }, at(2));
      assert.equal(view.status, "queued", "its parked call had settled: it continues at once");

      const resumed = await claimOne(store, run.id, at(3), { worker: "another-process" });
      assert.ok(resumed.snapshot);
      assert.deepEqual(resumed.snapshot, snapshot.bytes);
      assert.deepEqual((await readSnapshot(resumed.snapshot)).header, snapshot.header);
      const { vm: restored } = await restoreSnapshot(resumed.snapshot, {
        runId: run.id,
        limits: resolveLimits(resumed.limits),
      });
      try {
        const [parked] = resumed.calls;
        assert.equal(restored.settle(1, { ok: true, value: parked?.result ?? null }), true);
        assert.deepEqual(restored.run(), { kind: "parked", calls: [2] });
        restored.settle(2, { ok: true, value: "value of b" });
        const done = restored.run();
        assert.equal(done.kind, "done");
        assert.deepEqual(done.kind === "done" && done.result, {
          seen: ["value of a", "value of b"],
          closure: 20,
        });
      } finally {
        restored.dispose();
      }
    },
  );

  it("suspendRun without parked calls fails with NOT_PARKED (422)", async (_db, store) => {
    const run = await startRun(store);
    await rejectsWith(
      store.suspendRun(leaseOf(run), {
        snapshot: fakeSnapshotBytes(10),
        header: fakeHeader([], 0),
        wakeAt: at(60),
        waitingOn: { calls: [] },
      }, at(1)),
      "NOT_PARKED",
      422,
    );
    assert.equal((await store.getRun(run.id))?.status, "running");
  });

  // ---- completeRun, failRun, cancelRun ----------------------------------------------------

  /** A parent suspended on a child run (call 1); returns both. */
  async function parentWaitingOnChild(store: Store) {
    const childTask = await newTask(store, "child");
    const parent = await startRun(store);
    const call = await store.startChild(
      leaseOf(parent),
      { seq: 1, task: childTask, input: 7 },
      at(1),
    );
    await store.suspendRun(leaseOf(parent), {
      snapshot: fakeSnapshotBytes(100),
      header: fakeHeader([1], 1),
      wakeAt: null,
      waitingOn: { calls: [1], children: [call.childRunId!] },
    }, at(2));
    assert.equal((await store.getRun(parent.id))?.status, "suspended");
    const child = await claimOne(store, call.childRunId!, at(3), { worker: "child-worker" });
    return { parent, child };
  }

  it(
    "completeRun stores the result, drops the snapshot and queues the waiting parent",
    async (_db, store) => {
      const { parent, child } = await parentWaitingOnChild(store);
      const done = await store.completeRun(leaseOf(child), { total: 3 }, [
        { level: "log", message: "done", at: at(4).getTime() },
      ], at(4));
      assert.equal(done.status, "completed");
      assert.deepEqual(done.result, { total: 3 });
      assert.equal(ms(done.finishedAt), at(4).getTime());
      assert.equal(done.leaseOwner, undefined);
      assert.deepEqual((await store.getRun(child.id))?.logs?.map((l) => l.message), ["done"]);

      const parentNow = await store.getRun(parent.id);
      assert.equal(parentNow?.status, "queued");
      const [call] = await store.listCalls(parent.id);
      assert.equal(call?.status, "succeeded");
      assert.deepEqual(call?.result, { total: 3 });
      const resumed = await claimOne(store, parent.id, at(5));
      assert.deepEqual(resumed.calls.map((c) => [c.seq, c.status]), [[1, "succeeded"]]);
      await store.completeRun(leaseOf(resumed), "parent done", [], at(6));
      assert.equal(await store.getSnapshot(parent.id), null, "a finished run keeps no snapshot");
    },
  );

  it("completeRun keeps a JSON null result", async (_db, store) => {
    const run = await startRun(store);
    const done = await store.completeRun(leaseOf(run), null, [], at(1));
    assert.ok("result" in done && done.result === null, JSON.stringify(done));
    const read = await store.getRun(run.id);
    assert.ok(read && "result" in read && read.result === null, JSON.stringify(read));
  });

  it(
    "failRun stores the error and settles the waiting parent's call as failed",
    async (_db, store) => {
      const { parent, child } = await parentWaitingOnChild(store);
      const error = { code: "BOOM", name: "TypeError", message: "x is not a function" };
      const failed = await store.failRun(leaseOf(child), error, [], at(4));
      assert.equal(failed.status, "failed");
      assert.deepEqual(failed.error, error);
      assert.equal(failed.result, undefined);
      assert.equal((await store.getRun(parent.id))?.status, "queued");
      const [call] = await store.listCalls(parent.id);
      assert.equal(call?.status, "failed");
      assert.equal(call?.error?.code, "BOOM");
      assert.equal(call?.error?.name, "TypeError");
      assert.equal(call?.error?.message, "x is not a function");
      assert.deepEqual(call?.error?.data, { runId: child.id, error });
    },
  );

  it(
    "cancelRun cancels a run and its unfinished children; an ended run answers cancelled false",
    async (_db, store) => {
      const { parent, child } = await parentWaitingOnChild(store);
      const cancelled = await store.cancelRun(parent.id, { reason: "not needed", now: at(4) });
      assert.equal(cancelled.cancelled, true);
      assert.equal(cancelled.status, "cancelled");
      assert.equal(cancelled.error?.code, "CANCELLED");
      assert.equal(cancelled.error?.message, "not needed");
      assert.equal((await store.getRun(child.id))?.status, "cancelled");
      assert.equal(await store.getSnapshot(parent.id), null);
      await rejectsWith(store.completeRun(leaseOf(child), 1, [], at(5)), "STALE_LEASE", 409);

      const again = await store.cancelRun(parent.id, { now: at(6) });
      assert.equal(again.cancelled, false);
      assert.equal(again.status, "cancelled");
      assert.equal(ms(again.finishedAt), at(4).getTime());
      await rejectsWith(store.cancelRun(crypto.randomUUID()), "RUN_NOT_FOUND", 404);
    },
  );

  it(
    "cancelRun with an ownerId refuses another owner's run as RUN_NOT_FOUND",
    async (_db, store) => {
      const task = await newTask(store);
      const owner = crypto.randomUUID();
      const run = await store.enqueueRun({ task, input: 1, ownerId: owner });
      await rejectsWith(
        store.cancelRun(run.id, { ownerId: crypto.randomUUID() }),
        "RUN_NOT_FOUND",
        404,
      );
      assert.equal((await store.getRun(run.id))?.status, "queued");
      assert.equal((await store.cancelRun(run.id, { ownerId: owner })).cancelled, true);
    },
  );

  // ---- leases, stuck runs, tick -----------------------------------------------------------

  it(
    "requeueExpiredLeases requeues runs whose lease expired and fails them after the maximum",
    async (db, store) => {
      await retireOtherRuns(db);
      const run = await startRun(store, T0, { leaseSeconds: 30, worker: "gone" });
      assert.equal(await store.requeueExpiredLeases(at(29)), 0);
      assert.equal(await store.requeueExpiredLeases(at(31)), 1);
      const requeued = await store.getRun(run.id);
      assert.equal(requeued?.status, "queued");
      assert.equal(requeued?.leaseOwner, undefined);
      assert.ok(
        requeued?.logs?.some((l) => l.level === "system" && /gone expired/.test(l.message)),
        JSON.stringify(requeued?.logs),
      );

      await claimOne(store, run.id, at(40), { leaseSeconds: 30 });
      assert.equal(await store.requeueExpiredLeases(at(71), 2), 1);
      const failed = await store.getRun(run.id);
      assert.equal(failed?.status, "failed");
      assert.equal(failed?.error?.code, "RUN_LEASE_EXPIRED");
    },
  );

  it(
    "findStuckRuns lists a running run whose lease expired and a queued run nobody picked up",
    async (_db, store) => {
      const running = await startRun(store, T0, { leaseSeconds: 30 });
      const task = await newTask(store);
      const waiting = await store.enqueueRun({ task, input: 1, now: T0 });
      const early = await store.findStuckRuns(at(20));
      assert.ok(!early.some((r) => r.id === running.id || r.id === waiting.id), "nothing yet");
      const late = await store.findStuckRuns(at(11 * 60));
      const problems = late.filter((r) => r.id === running.id || r.id === waiting.id)
        .map((r) => [r.id, r.problem]);
      assert.deepEqual(
        problems.sort(),
        [
          [running.id, "lease expired"],
          [waiting.id, "due but not picked up for 10 minutes"],
        ].sort(),
      );
      assert.ok(late.every((r) => typeof r.since === "string"));
    },
  );

  it("tick wakes sleepers that are due and requeues expired leases", async (db, store) => {
    await retireOtherRuns(db);
    const sleeper = await startRun(store);
    await store.recordCall(leaseOf(sleeper), {
      seq: 1,
      service: "sleep",
      path: [],
      args: [60_000],
      mode: "durable",
      wakeAt: at(61),
    }, at(1));
    await store.suspendRun(leaseOf(sleeper), {
      snapshot: fakeSnapshotBytes(64),
      header: fakeHeader([1], 1),
      wakeAt: at(61),
      waitingOn: { calls: [1], wakeAt: at(61).toISOString() },
    }, at(1));
    const crashed = await startRun(store, T0, { leaseSeconds: 30 });
    assert.deepEqual(await store.tick(at(10)), { requeued: 0, woken: 0, expired: 0 });
    assert.deepEqual(await store.tick(at(61)), { requeued: 1, woken: 1, expired: 0 });
    assert.equal((await store.getRun(sleeper.id))?.status, "queued");
    assert.equal((await store.getRun(crashed.id))?.status, "queued");
    assert.deepEqual(await store.tick(at(62)), { requeued: 0, woken: 0, expired: 0 });
  });

  it(
    "nextWakeAt is the earliest wake time of a sleeper or run time of a future run",
    async (db, store) => {
      await retireOtherRuns(db);
      assert.equal(await store.nextWakeAt(T0), null, "nothing is waiting");
      const sleeper = await startRun(store);
      await store.recordCall(leaseOf(sleeper), {
        seq: 1,
        service: "sleep",
        path: [],
        args: [7_200_000],
        mode: "durable",
        wakeAt: at(7200),
      }, at(1));
      await store.suspendRun(leaseOf(sleeper), {
        snapshot: fakeSnapshotBytes(64),
        header: fakeHeader([1], 1),
        wakeAt: at(7200),
        waitingOn: { calls: [1], wakeAt: at(7200).toISOString() },
      }, at(1));
      const task = await newTask(store);
      const later = await store.enqueueRun({ task, input: 1, runAt: at(3600), now: T0 });
      assert.equal((await store.nextWakeAt(at(10)))?.getTime(), at(3600).getTime());
      await claimOne(store, later.id, at(3600));
      assert.equal((await store.nextWakeAt(at(3600)))?.getTime(), at(7200).getTime());
    },
  );

  // ---- kv and services --------------------------------------------------------------------

  it("kvSet, kvGet and kvDelete keep JSON values by key", async (_db, store) => {
    const key = uniqueName("kv");
    assert.deepEqual(await store.kvGet(key), { found: false });
    await store.kvSet(key, { a: [1, "b", null] });
    assert.deepEqual(await store.kvGet(key), {
      found: true,
      value: { a: [1, "b", null] },
      secret: false,
    });
    await store.kvSet(key, "s3cret", true);
    assert.deepEqual(await store.kvGet(key), { found: true, value: "s3cret", secret: true });
    await store.kvSet(key, null);
    assert.deepEqual(await store.kvGet(key), { found: true, value: null, secret: false });
    assert.equal(await store.kvDelete(key), true);
    assert.equal(await store.kvDelete(key), false);
    assert.deepEqual(await store.kvGet(key), { found: false });
  });

  it("getService returns a registered service and null for an unknown one", async (db, store) => {
    const name = uniqueName("svc").replace(/-/g, "_");
    await db.query(
      `insert into quickjs.services (name, url, headers, timeout_ms) values ($1, $2, $3::text::jsonb, 5000)`,
      [name, "https://svc.example.com/fn", JSON.stringify({ "x-api-key": "k" })],
    );
    assert.deepEqual(await store.getService(name), {
      name,
      url: "https://svc.example.com/fn",
      headers: { "x-api-key": "k" },
      timeoutMs: 5000,
      completion: "inline",
      completionTimeoutMs: 86_400_000,
    });
    assert.equal(await store.getService("no_such_service"), null);
  });
}

// ---- the three drivers ------------------------------------------------------------------

const postgresGroup = testGroup("contract_postgres");
contractSuite("postgres", postgresGroup.test, {
  serverOnly: "the postgres.js driver needs a PostgreSQL server",
});

const pgliteGroup = testGroup("contract_pglite", openPgliteTestDb);
contractSuite("pglite", pgliteGroup.test, {});

const supabaseGroup = testGroup("contract_supabase", openSupabaseTestDb);
contractSuite("supabase", supabaseGroup.test, {});

supabaseGroup.test(
  "[supabase] every store call is a POST to /rest/v1/rpc/<operation> in the quickjs schema",
  async ({ store }) => {
    const before = postgrestRequests.length;
    await store.kvSet("via-postgrest", { ok: true });
    const sent = postgrestRequests.slice(before);
    assert.deepEqual(sent, [{
      method: "POST",
      path: "/rest/v1/rpc/kv_set",
      profile: "quickjs",
      body: { p_key: "via-postgrest", p_value: { ok: true }, p_secret: false },
    }]);
    const operations = new Set(Object.keys(OPERATIONS));
    assert.ok(postgrestRequests.length > 50, "the contract suite went through the double");
    for (const request of postgrestRequests) {
      const op = request.path.replace(/^\/rest\/v1\/rpc\//, "");
      assert.ok(operations.has(op), `unexpected request ${request.method} ${request.path}`);
      assert.equal(request.profile, "quickjs");
    }
  },
);
