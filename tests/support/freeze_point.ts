/**
 * Freezes a worker process (SIGSTOP) at an exact point of a run: right after the database
 * has journaled one of its calls and before the worker has read the reply. The test's own
 * connection holds a lock the worker's statement must wait for; once the worker's backend
 * is seen waiting on it, the worker is stopped and the lock released, so the statement
 * commits while the process that sent it sleeps.
 */
import postgres from "postgres";
import type { TestDb } from "./db.ts";
import { waitFor, type WorkerProcess } from "./worker_processes.ts";

export interface FreezePoint {
  /** Waits until the worker's `operation` waits on the test's lock, stops it, releases. */
  freeze(worker: WorkerProcess, timeoutMs?: number): Promise<void>;
  /** Releases the lock if freeze() never ran (a failing test). */
  release(): Promise<void>;
}

async function holder(db: TestDb) {
  const sql = postgres(db.url!, { max: 1, onnotice: () => {} });
  const conn = await sql.reserve();
  const [{ pid }] = await conn`select pg_backend_pid() as pid` as unknown as [{ pid: number }];
  let open = true;
  const end = async (how: "rollback" | "commit") => {
    if (!open) return;
    open = false;
    await conn.unsafe(how).catch(() => {});
    conn.release();
    await sql.end({ timeout: 1 });
  };
  return { conn, pid, end };
}

async function freezeWhenBlocked(
  db: TestDb,
  blocker: number,
  operation: string,
  worker: WorkerProcess,
  end: () => Promise<void>,
  timeoutMs: number,
): Promise<void> {
  await waitFor(`${worker.id}'s ${operation} to wait on the test's lock`, async () => {
    // blocked by the test's connection, or queued behind the worker's own heartbeat that
    // is (a row lock's second waiter waits on the first, not on the holder); not the
    // worker's statements waiting on each other
    const rows = await db.query<{ pid: number }>(
      `select a.pid from pg_stat_activity a
       where a.datname = current_database() and a.query like '%quickjs.' || $2 || '(%'
         and ($1 = any (pg_blocking_pids(a.pid)) or exists (
           select 1 from unnest(pg_blocking_pids(a.pid)) b where $1 = any (pg_blocking_pids(b))))`,
      [blocker, operation],
    );
    return rows.length > 0;
  }, timeoutMs);
  worker.signal("SIGSTOP");
  await end();
}

/**
 * The worker freezes right after record_call journals call `seq` of `runId` (status
 * "started"), before it runs the call: the test holds an uncommitted row with the same key
 * (foreign keys off for that session, so it locks nothing else), which the worker's insert
 * waits for. Set it up before the worker reaches the call.
 */
export async function freezeAfterRecording(
  db: TestDb,
  runId: string,
  seq: number,
  /** The statement that journals the call: record_call, or kv_call (which also applies it). */
  operation = "record_call",
): Promise<FreezePoint> {
  const h = await holder(db);
  await h.conn.unsafe("set session_replication_role = replica");
  await h.conn.unsafe("begin");
  await h.conn.unsafe(
    `insert into quickjs.calls (run_id, seq, service, args, mode, status, idempotency_key)
     values ($1, $2, 'freeze-point', '[]', 'inline', 'pending', 'freeze-point')`,
    [runId, seq],
  );
  return {
    freeze: (worker, timeoutMs = 30_000) =>
      freezeWhenBlocked(db, h.pid, operation, worker, () => h.end("rollback"), timeoutMs),
    release: () => h.end("rollback"),
  };
}

/**
 * The worker freezes right after settle_call journals a call's outcome: call lockRun() when
 * the call is about to return (in the service's handler); it takes the run's row lock,
 * which settle_call waits for.
 */
export async function freezeAfterSettling(
  db: TestDb,
  runId: string,
): Promise<FreezePoint & { lockRun(): Promise<void> }> {
  const h = await holder(db);
  return {
    async lockRun() {
      await h.conn.unsafe("begin");
      await h.conn.unsafe("select 1 from quickjs.runs where id = $1 for update", [runId]);
    },
    freeze: (worker, timeoutMs = 30_000) =>
      freezeWhenBlocked(db, h.pid, "settle_call", worker, () => h.end("commit"), timeoutMs),
    release: () => h.end("rollback"),
  };
}
