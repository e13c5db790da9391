/**
 * After a fault test has drained: compares the runs, the journal (quickjs.calls) and what the
 * recording service really received. Counts the lost and wrong runs and the re-executions by
 * kind, and lists every breach of the journal's promises: a settled call is never sent again,
 * a call is re-sent only when a fault cut it off, and always with the same idempotency key.
 */
import type { TestDb } from "./db.ts";
import type { Received } from "./recording_service.ts";

/** How soon after its worker's SIGCONT a frozen send arrives (it is on its way already). */
const FROZEN_SEND_MS = 1000;

export interface AuditFigures {
  runs: number;
  completed: number;
  /** Not completed: failed, or never final. */
  lost: number;
  /** Completed with another result than expected (or kv holding another value). */
  wrong: number;
  /** Service requests beyond the first for one call (each one a call in flight at a fault). */
  resent: number;
  /** Journal restarts of a call that never reached the service (cut off before the send). */
  restartedUnsent: number;
  /** Runs given to another worker because their lease ran out. */
  leaseExpiries: number;
  /**
   * Sends that reached the service after the journal settled the call, from a worker that
   * was frozen between its lease check and the write (same key; at least once).
   */
  frozenSends: number;
  /** Snapshots taken (each one restored by a later invocation). */
  suspensions: number;
}

export interface Audit {
  figures: AuditFigures;
  /** What broke a promise; empty when all is well. */
  breaches: string[];
  /** Final error codes of the runs that did not complete, for the report. */
  failures: Record<string, number>;
}

interface RunRow {
  id: string;
  status: string;
  input: { x: number; steps: number };
  result: unknown;
  error: { code?: string } | null;
  kv: unknown;
}

interface CallRow {
  run_id: string;
  seq: number;
  status: string;
  attempts: number;
  idempotency_key: string;
  completed_ms: number | null;
}

/**
 * `expected(input)` is what a run must return (`{ total }`, also written to kv); `faults`
 * when faults were dealt (Date.now() from and to: a kill is an instant, a database crash
 * lasts until it is up again): a re-sent request must have a fault between it and the one
 * before.
 */
export async function auditRuns(db: TestDb, options: {
  task: string;
  service: string;
  received: Received[];
  expected: (input: { x: number; steps: number }) => unknown;
  /** The run writes its total to kv key `${kvPrefix}${input.x}`. */
  kvPrefix?: string;
  faults: [number, number][];
}): Promise<Audit> {
  const runs = await db.query<RunRow>(
    `select r.id::text, r.status::text, r.input, r.result, r.error,
            (select value from quickjs.kv k where k.key = $2 || (r.input->>'x')) as kv
     from quickjs.runs r where r.task_name = $1`,
    [options.task, options.kvPrefix ?? ""],
  );
  const calls = await db.query<CallRow>(
    `select c.run_id::text, c.seq, c.status::text, c.attempts, c.idempotency_key,
            (extract(epoch from c.completed_at) * 1000)::float8 as completed_ms
     from quickjs.calls c join quickjs.runs r on r.id = c.run_id
     where r.task_name = $1 and c.service = $2`,
    [options.task, options.service],
  );
  const [logs] = await db.query<{ expiries: number }>(
    `select count(*) filter (where l.message ~ 'lease .* expired')::int as expiries
     from quickjs.run_logs l join quickjs.runs r on r.id = l.run_id where r.task_name = $1`,
    [options.task],
  );
  const breaches: string[] = [];
  const failures: Record<string, number> = {};
  let lost = 0;
  let wrong = 0;
  for (const run of runs) {
    if (run.status !== "completed") {
      lost++;
      const code = run.status === "failed" ? run.error?.code ?? "?" : run.status;
      failures[code] = (failures[code] ?? 0) + 1;
      continue;
    }
    const want = options.expected(run.input);
    if (JSON.stringify(run.result) !== JSON.stringify(want)) {
      wrong++;
      breaches.push(
        `run ${run.id} returned ${JSON.stringify(run.result)}, not ${JSON.stringify(want)}`,
      );
    } else if (
      options.kvPrefix !== undefined &&
      JSON.stringify(run.kv) !== JSON.stringify((want as { total: unknown }).total)
    ) {
      wrong++;
      breaches.push(`run ${run.id}: kv holds ${JSON.stringify(run.kv)}, not the run's total`);
    }
  }

  const requests = new Map<string, Received[]>();
  for (const r of options.received) {
    const key = `${r.runId}:${r.seq}`;
    requests.set(key, [...(requests.get(key) ?? []), r]);
  }
  const journal = new Map(calls.map((c) => [`${c.run_id}:${c.seq}`, c]));
  let resent = 0;
  let restartedUnsent = 0;
  /**
   * A send that reached the service after the journal settled its call, right after a pause
   * that spanned the settlement: its worker was frozen between its lease check and the
   * socket write, the one window a check before the send cannot close (README: at least
   * once, with the same key). Counted, not a breach; anything else late is one.
   */
  let frozenSends = 0;
  const frozenBetweenCheckAndSend = (r: Received, completedMs: number | null) =>
    completedMs !== null && r.at > completedMs &&
    options.faults.some(([from, to]) =>
      from <= completedMs && to >= completedMs && r.at >= to && r.at - to <= FROZEN_SEND_MS
    );
  for (const [key, sent] of requests) {
    const call = journal.get(key);
    if (!call) {
      breaches.push(`the service got ${key}, which the journal does not have`);
      continue;
    }
    sent.sort((a, b) => a.at - b.at);
    for (const r of sent) {
      if (r.bodyKey !== call.idempotency_key || r.headerKey !== call.idempotency_key) {
        breaches.push(
          `${key} attempt ${r.attempt} came with key ${r.bodyKey} / ${r.headerKey}, the journal's is ${call.idempotency_key}`,
        );
      }
      if (frozenBetweenCheckAndSend(r, call.completed_ms)) {
        frozenSends++;
      } else if (call.completed_ms !== null && r.at > call.completed_ms) {
        breaches.push(
          `${key} attempt ${r.attempt} reached the service ${
            r.at - call.completed_ms
          } ms after the journal settled it`,
        );
      }
    }
    for (let i = 1; i < sent.length; i++) {
      const before = sent[i - 1]!;
      const now = sent[i]!;
      if (now.attempt <= before.attempt && !frozenBetweenCheckAndSend(now, call.completed_ms)) {
        breaches.push(`${key} was sent as attempt ${now.attempt} after attempt ${before.attempt}`);
      }
      if (!options.faults.some(([from, to]) => to >= before.at && from <= now.at)) {
        breaches.push(
          `${key} was sent again (attempt ${now.attempt}) with no fault since attempt ${before.attempt}`,
        );
      }
    }
    resent += sent.length - 1;
    const counted = sent.filter((r) => !frozenBetweenCheckAndSend(r, call.completed_ms)).length;
    if (counted > call.attempts) {
      breaches.push(
        `${key} reached the service ${sent.length} times; the journal counts ${call.attempts}`,
      );
    }
    restartedUnsent += Math.max(0, call.attempts - sent.length);
  }
  for (const [key, call] of journal) {
    if (!requests.has(key) && call.status === "succeeded") {
      breaches.push(`${key} succeeded in the journal but never reached the service`);
    }
  }
  const [suspended] = await db.query<{ n: number }>(
    `select coalesce(sum(r.suspensions), 0)::int as n from quickjs.runs r where r.task_name = $1`,
    [options.task],
  );
  return {
    figures: {
      runs: runs.length,
      completed: runs.length - lost,
      lost,
      wrong,
      resent,
      restartedUnsent,
      leaseExpiries: logs?.expiries ?? 0,
      frozenSends,
      suspensions: suspended?.n ?? 0,
    },
    breaches,
    failures,
  };
}

/** How many of a task's runs are final, of how many. */
export async function finalCount(
  db: TestDb,
  task: string,
): Promise<{ final: number; all: number }> {
  const [row] = await db.query<{ final: number; all: number }>(
    `select count(*) filter (where status in ('completed', 'failed', 'cancelled'))::int as final,
            count(*)::int as all
     from quickjs.runs where task_name = $1`,
    [task],
  );
  return row!;
}
