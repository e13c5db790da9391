#!/usr/bin/env -S deno run -A
/**
 * For operators: what a run is doing and whether its saved VM can be brought back.
 *
 *   deno task diagnose inspect <runId>     the run, its journal, snapshot header, last logs
 *   deno task diagnose restore <runId>     dry run: restore the snapshot here, write nothing
 *   deno task diagnose stuck [--fix]       runs in a state that should not last; --fix
 *                                          repairs each (quickjs.repair_run); warns, as
 *                                          dispatch does, when runnable runs have no executor
 *   deno task diagnose dispatch [--after S]  whether ready runs reach an executor: settings,
 *                                          pg_net, the tick, runs runnable for over S s (60)
 *   deno task diagnose snapshots [--limit N]   the largest snapshots
 *   --db URL   postgres://… | pglite | pglite:<dir>  (default: DATABASE_URL, SUPABASE_DB_URL,
 *              else an in-memory PGlite)
 *   --json     one JSON object
 *   --logs N   inspect: how many of the last log lines to show (default 20)
 *
 * Exit code: 0 when all is well; 1 when the run does not exist, its snapshot cannot be
 * restored, stuck runs were found and not (all) repaired, runnable runs have no executor
 * (dispatch; stuck without --fix), or the database failed; 2 on bad usage.
 */
import { parseArgs } from "node:util";
import type { Store } from "../supabase/functions/_shared/quickjs/mod.ts";
import { defaultDb, openStore } from "./lib/open_store.ts";
import {
  type DispatchHealth,
  dispatchHealth,
  inspectRun,
  largestSnapshots,
  repairStuckRuns,
  restoreDryRun,
  type RunReport,
} from "./lib/diagnose.ts";
import { bytes, fields, millis, table, when } from "./lib/format.ts";

const USAGE = `usage: diagnose <command> [--db URL] [--json]
  inspect <runId> [--logs N]   the run, its journal, its snapshot header, its last logs
  restore <runId>              restore the snapshot in this process (dry run, writes nothing)
  stuck [--fix]                runs that need an operator; --fix repairs them
  dispatch [--after S]         whether ready runs reach an executor (runnable > S s: 60)
  snapshots [--limit N]        the largest snapshots`;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

class UsageError extends Error {
  override name = "UsageError";
}

interface Options {
  json: boolean;
  fix: boolean;
  limit: number;
  logs: number;
  after: number;
}

function count(text: string, name: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${name} must be a whole number`);
  return n;
}

export async function main(args: string[] = Deno.args): Promise<number> {
  let command: string;
  let runId: string | undefined;
  let options: Options;
  let db: string | undefined;
  try {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: {
        db: { type: "string" },
        json: { type: "boolean", default: false },
        fix: { type: "boolean", default: false },
        limit: { type: "string", default: "20" },
        logs: { type: "string", default: "20" },
        after: { type: "string", default: "60" },
        help: { type: "boolean", short: "h", default: false },
      },
    });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    [command = "", runId] = positionals;
    const wantsRun = command === "inspect" || command === "restore";
    if (!["inspect", "restore", "stuck", "dispatch", "snapshots"].includes(command)) {
      throw new UsageError(command ? `unknown command ${command}` : "which command?");
    }
    if (positionals.length !== (wantsRun ? 2 : 1)) {
      throw new UsageError(
        wantsRun ? `${command} takes one run id` : `${command} takes no argument`,
      );
    }
    if (wantsRun && !UUID.test(runId!)) throw new UsageError(`${runId} is not a run id (a uuid)`);
    if (values.fix && command !== "stuck") throw new UsageError("--fix goes with stuck");
    options = {
      json: values.json,
      fix: values.fix,
      limit: count(values.limit, "limit"),
      logs: count(values.logs, "logs"),
      after: count(values.after, "after"),
    };
    db = values.db;
  } catch (e) {
    console.error(`diagnose: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  // an in-memory PGlite starts empty: only there do migrations make sense for diagnose
  const where = db ?? defaultDb();
  const store = await openStore(where, {
    migrate: where === "pglite" || where.startsWith("pglite:"),
  });
  try {
    switch (command) {
      case "inspect":
        return await inspect(store, runId!, options);
      case "restore":
        return await restore(store, runId!, options);
      case "stuck":
        return await stuck(store, options);
      case "dispatch":
        return await dispatch(store, options);
      default:
        return await snapshots(store, options);
    }
  } catch (e) {
    console.error(`diagnose: ${(e as Error).message}`);
    return 1;
  } finally {
    await store.close();
  }
}

// ---- inspect ---------------------------------------------------------------------------

async function inspect(store: Store, runId: string, options: Options): Promise<number> {
  const report = await inspectRun(store, runId, { logLines: options.logs });
  if (!report) {
    if (options.json) console.log(JSON.stringify({ error: "RUN_NOT_FOUND", runId }));
    console.error(`diagnose: run ${runId} does not exist`);
    return 1;
  }
  if (options.json) {
    console.log(JSON.stringify(report));
    return 0;
  }
  for (const line of inspectText(report)) console.log(line);
  return 0;
}

function inspectText({ run, calls, snapshot, logs, logCount }: RunReport): string[] {
  const now = new Date();
  const out: string[] = [];
  const waiting = run.waitingOn
    ? [
      run.waitingOn.calls?.length ? `calls ${run.waitingOn.calls.join(", ")}` : "",
      run.waitingOn.children?.length ? `children ${run.waitingOn.children.join(", ")}` : "",
      run.waitingOn.wakeAt ? `until ${run.waitingOn.wakeAt}` : "",
    ].filter(Boolean).join("; ")
    : undefined;
  out.push(
    `run ${run.id}`,
    ...fields([
      ["task", `${run.task} v${run.taskVersion}`],
      ["status", run.status],
      ["attempt", String(run.attempts)],
      ["invocations", String(run.invocations ?? 0)],
      ["suspensions", String(run.suspensions)],
      ["wake at", when(run.wakeAt, now)],
      ["waiting on", waiting],
      [
        "lease",
        run.leaseOwner ? `${run.leaseOwner}, expires ${when(run.leaseExpiresAt, now)}` : undefined,
      ],
      ["parent", run.parentRunId ? `${run.parentRunId} (call ${run.parentCallSeq})` : undefined],
      ["input", run.input],
      ["result", run.result],
      ["error", run.error ? `${run.error.code}: ${run.error.message}` : undefined],
      ["created", when(run.createdAt, now)],
      ["updated", when(run.updatedAt, now)],
      ["finished", when(run.finishedAt, now)],
    ], "  "),
  );
  // the attempts a task-level @retry ended: each one's error (their journals are kept in
  // quickjs.run_attempts.calls; the journal below is the current attempt's)
  if (run.previousAttempts?.length) {
    out.push("", `previous attempts (${run.previousAttempts.length})`);
    out.push(...table(
      ["attempt", "invocations", "calls", "ended", "error"],
      run.previousAttempts.map((a) => [
        String(a.attempt),
        String(a.invocations),
        String(a.calls),
        when(a.endedAt, now) ?? "",
        `${a.error.code}: ${a.error.message}`,
      ]),
      "  ",
    ));
  }
  out.push(
    "",
    `journal of attempt ${run.attempts} (${calls.length} call${calls.length === 1 ? "" : "s"})`,
  );
  if (calls.length) {
    out.push(...table(
      [
        "seq",
        "call",
        "mode",
        "status",
        "att",
        "idempotency key",
        "child run",
        "wake at / waiting",
        "outcome",
      ],
      calls.map((c) => [
        String(c.seq),
        c.call,
        c.mode,
        c.status,
        String(c.attempts),
        c.idempotencyKey,
        c.childRunId ?? "",
        c.wakeAt ?? c.waiting ?? "",
        (c.outcome ?? (c.status === "pending" || c.status === "started" ? `(${c.args})` : "")) +
        (c.failedAttempts ? ` [failed before: ${c.failedAttempts.join(", ")}]` : ""),
      ]),
      "  ",
    ));
  }
  out.push("");
  if (!snapshot) {
    out.push("snapshot: none");
  } else {
    out.push(
      "snapshot",
      ...fields([
        ["format", `${snapshot.format}, variant ${snapshot.variant ?? "?"}`],
        ["package", `quickjs-emscripten ${snapshot.packageVersion ?? "?"}`],
        ["wasm sha256", snapshot.wasmSha256],
        [
          "memory",
          `${bytes(snapshot.memoryBytes)}; ${snapshot.pageCount ?? "?"} changed page(s) saved`,
        ],
        ["size", bytes(snapshot.sizeBytes)],
        [
          "parked on",
          `calls ${snapshot.parkedCalls?.join(", ") ?? "?"} (last call ${snapshot.lastCallId})`,
        ],
        ["created", when(snapshot.createdAt, now)],
        ["integrity", snapshot.integrity],
        [
          "restorable",
          snapshot.restorable ? "yes, by this build" : `NO: ${snapshot.incompatibility}`,
        ],
      ], "  "),
    );
  }
  out.push("");
  out.push(
    logCount > logs.length
      ? `logs (last ${logs.length}; earlier ones not shown)`
      : `logs (${logs.length})`,
  );
  const levelWidth = Math.max(0, ...logs.map((l) => l.level.length));
  // a.i: the attempt and invocation that wrote the line
  const origin = (l: RunReport["logs"][number]) =>
    l.attempt === undefined ? "" : `${l.attempt}.${l.invocation ?? "?"}  `;
  for (const l of logs) {
    out.push(`  ${l.at}  ${origin(l)}${l.level.padEnd(levelWidth)}  ${l.message}`);
  }
  return out;
}

// ---- restore ---------------------------------------------------------------------------

async function restore(store: Store, runId: string, options: Options): Promise<number> {
  const report = await restoreDryRun(store, runId);
  if (options.json) {
    console.log(JSON.stringify(report));
  } else if (report.ok) {
    console.log(`restore of run ${runId}: ok in ${millis(report.restoreMs!)} (nothing written)`);
    for (
      const line of fields([
        ["snapshot", bytes(report.sizeBytes)],
        ["parked on", `calls ${report.parkedCalls!.join(", ")}`],
        [
          "VM memory",
          `QuickJS heap ${bytes(report.memory!.heapBytes)}, wasm memory ${
            bytes(report.memory!.wasmBytes)
          }`,
        ],
      ], "  ")
    ) console.log(line);
  } else {
    console.log(`restore of run ${runId}: FAILED ${report.error!.code}`);
    console.log(`  ${report.error!.message}`);
  }
  return report.ok ? 0 : 1;
}

// ---- stuck -----------------------------------------------------------------------------

async function stuck(store: Store, options: Options): Promise<number> {
  const report = options.fix
    ? await repairStuckRuns(store)
    : { stuck: await store.findStuckRuns(), repairs: undefined };
  const repaired = new Set(
    (report.repairs ?? []).filter((r) => r.action !== "none").map((r) => r.runId),
  );
  const unrepaired = [...new Set(report.stuck.map((r) => r.id))].filter((id) => !repaired.has(id));
  const health = await dispatchHealth(store, { afterSeconds: options.after });
  // --fix answers for its repairs; a listing also fails when runnable runs have no executor
  const ok = unrepaired.length === 0 && (options.fix || health.problems.length === 0);
  if (options.json) {
    console.log(JSON.stringify({
      stuck: report.stuck.map((r) => ({
        problem: r.problem,
        since: r.since,
        runId: r.id,
        task: r.task,
        status: r.status,
      })),
      ...(report.repairs
        ? {
          repairs: report.repairs.map((r) => ({
            runId: r.runId,
            action: r.action,
            reason: r.reason,
            status: r.run.status,
          })),
        }
        : {}),
      unrepaired,
      dispatch: health,
    }));
    return ok ? 0 : 1;
  }
  const warnings = health.problems.map((p) => `warning: ${p}`);
  if (report.stuck.length === 0) {
    console.log("no stuck runs");
    for (const line of warnings) console.log(line);
    return ok ? 0 : 1;
  }
  const repairs = new Map((report.repairs ?? []).map((r) => [r.runId, r]));
  const headings = ["problem", "since", "run", "task", "status"];
  if (options.fix) headings.push("repair");
  for (
    const line of table(
      headings,
      report.stuck.map((r) => {
        const row = [r.problem, r.since, r.id, r.task, r.status];
        const repair = repairs.get(r.id);
        if (options.fix) {
          row.push(
            repair ? `${repair.action} → ${repair.run.status}: ${repair.reason ?? ""}` : "",
          );
        }
        return row;
      }),
    )
  ) console.log(line);
  console.log("");
  if (!options.fix) {
    console.log(`${unrepaired.length} stuck run(s); --fix repairs them`);
  } else if (ok) {
    console.log(`repaired ${repaired.size} run(s)`);
  } else {
    console.log(`repaired ${repaired.size} run(s); ${unrepaired.length} could not be repaired`);
  }
  for (const line of warnings) console.log(line);
  return ok ? 0 : 1;
}

// ---- dispatch --------------------------------------------------------------------------

async function dispatch(store: Store, options: Options): Promise<number> {
  const health = await dispatchHealth(store, { afterSeconds: options.after });
  const ok = health.problems.length === 0;
  if (options.json) {
    console.log(JSON.stringify(health));
    return ok ? 0 : 1;
  }
  for (const line of dispatchText(health)) console.log(line);
  return ok ? 0 : 1;
}

function dispatchText(h: DispatchHealth): string[] {
  const out = fields([
    ["dispatch", h.mode],
    ["pg_net", h.pgNet ? "installed" : "not installed"],
    ["function url", h.functionUrl ?? "(not set)"],
    ["key", h.key ? "set" : "(not set)"],
    ["tick", h.tick ? `pg_cron, '${h.tick}'` : "not scheduled (pg_cron)"],
    ["listeners", `${h.listeners} connection(s) LISTEN quickjs_runs (a hint)`],
    [
      "runnable",
      `${h.waiting} run(s) for more than ${h.afterSeconds} s` +
      (h.oldestSince ? `, the oldest since ${h.oldestSince}` : ""),
    ],
  ], "");
  out.push("");
  if (h.problems.length === 0) out.push("ready runs reach an executor");
  for (const p of h.problems) out.push(`warning: ${p}`);
  return out;
}

// ---- snapshots -------------------------------------------------------------------------

async function snapshots(store: Store, options: Options): Promise<number> {
  const list = await largestSnapshots(store, options.limit);
  if (options.json) {
    console.log(JSON.stringify(list));
    return 0;
  }
  if (list.count === 0) {
    console.log("no snapshots");
    return 0;
  }
  for (
    const line of table(
      ["run", "task", "status", "size", "memory", "build", "created"],
      list.snapshots.map((s) => [
        s.runId,
        `${s.task} v${s.taskVersion}`,
        s.status,
        bytes(s.sizeBytes),
        bytes(s.memoryBytes),
        `format ${s.format}, wasm ${s.wasmSha256.slice(0, 12)}`,
        s.createdAt,
      ]),
    )
  ) console.log(line);
  console.log(
    `\n${list.count} snapshot(s), ${bytes(list.totalBytes)} in all` +
      (list.count > list.snapshots.length ? ` (the ${list.snapshots.length} largest shown)` : ""),
  );
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (e) {
    console.error(`diagnose: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
