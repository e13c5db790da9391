#!/usr/bin/env -S deno run -A
/**
 * The self-hosted worker: runs the runs of a database, up to N at a time, woken by NOTIFY
 * (postgres.js and PGlite can listen), by wake times and by polling. Prints one line per
 * invocation to stdout (run id, task, status, ms); notes about the worker go to stderr.
 *
 *   deno task worker --db postgres://… --concurrency 8
 *   --db URL             postgres://… | pglite | pglite:<dir>  (default: DATABASE_URL,
 *                        SUPABASE_DB_URL, else an in-memory PGlite)
 *   --concurrency N      invocations at once (default 4)
 *   --poll-ms MS         claim at least this often, in case a NOTIFY was lost (default 5000)
 *   --tick-ms MS         run quickjs.tick() this often: asynchronous calls' deadlines and
 *                        heartbeats, vanished workers' runs (default 10000; 0: pg_cron does)
 *   --lease-seconds S    lease length; renewed every third of it (default 30)
 *   --tools module.ts    in-process tools: the module's default export, { name: fn }
 *   --inline-sleep-max-ms MS  sleeps up to this long wait in-process; longer ones save the VM
 *                        and wake from the database (default 5000; 0: every sleep is durable)
 *   --worker-id ID       the name in leases and logs (default worker-<host>-<pid>)
 *   --in-process         run the VMs on the worker's own thread, not on a pool of threads
 *                        (default: one thread per concurrent invocation, each stopped if a
 *                        task holds it past its slice inside a built-in the interrupt
 *                        cannot reach; scripts/lib/threads/)
 *   --once               run until nothing is due, then exit (cron-style use, tests)
 *   --json               JSON lines instead of text
 *   --migrate            apply supabase/migrations first (under a lock: several workers may
 *                        start at once); without it the worker expects a migrated database,
 *                        except an in-memory PGlite, which starts empty and is always migrated
 *
 * tools.http.fetch may reach the hosts in QUICKJS_HTTP_ALLOW (comma-separated patterns).
 * SIGINT / SIGTERM: stop claiming, hand the running runs over at their next idle point (they
 * are queued to continue at once, in this worker's next life or another worker), wait for
 * that, exit 0. A second signal exits at once (the leases then run out instead).
 *
 * Exit code: 0 on a clean stop (or, with --once, when nothing is left to do), 1 when the
 * database failed (with --once: any claim or invocation that failed), 2 on bad usage.
 */
import { parseArgs } from "node:util";
import { hostname } from "node:os";
// the modules themselves, not mod.ts: it carries the supabase-js driver, which the worker
// never uses (tests/deploy/graph_test.ts)
import {
  Engine,
  type InvocationResult,
} from "../supabase/functions/_shared/quickjs/engine/run_loop.ts";
import {
  completionBaseUrlFromEnv,
  type CustomTool,
  ToolRegistry,
} from "../supabase/functions/_shared/quickjs/engine/tools.ts";
import { httpOptionsFromEnv } from "../supabase/functions/_shared/quickjs/engine/http_tool.ts";
import { defaultDb, openStore } from "./lib/open_store.ts";
import { WorkerLoop } from "./lib/worker_loop.ts";
import { millis } from "./lib/format.ts";
import { loadToolsModule } from "./lib/tools_module.ts";
import { ThreadPool } from "./lib/threads/pool.ts";
import { resolve } from "node:path";

const USAGE = "usage: worker [--db URL] [--concurrency N] [--poll-ms MS] [--tick-ms MS] " +
  "[--lease-seconds S] " +
  "[--tools module.ts] [--inline-sleep-max-ms MS] [--worker-id ID] [--in-process] [--once] [--json] " +
  "[--migrate]";

class UsageError extends Error {
  override name = "UsageError";
}

function positiveInt(name: string, text: string, min = 1): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) {
    throw new UsageError(`--${name} must be a whole number of at least ${min}, got ${text}`);
  }
  return n;
}

async function loadTools(module?: string): Promise<Record<string, CustomTool>> {
  try {
    return await loadToolsModule(module);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

function invocationLine(result: InvocationResult, json: boolean): string {
  const ms = Math.round(result.wallMs);
  if (json) {
    return JSON.stringify({
      at: new Date().toISOString(),
      runId: result.runId,
      task: result.task,
      status: result.status,
      ms,
      restored: result.restored,
      ...(result.wakeAt ? { wakeAt: result.wakeAt } : {}),
      ...(result.snapshotBytes ? { snapshotBytes: result.snapshotBytes } : {}),
      ...(result.error ? { error: result.error.code } : {}),
    });
  }
  const note = result.error
    ? `  ${result.error.code}: ${result.error.message}`
    : result.wakeAt && result.status === "suspended"
    ? `  wakes ${result.wakeAt}`
    : "";
  return `${new Date().toISOString()}  ${
    result.status.padEnd(9)
  }  ${result.runId}  ${result.task}` +
    `  ${millis(result.wallMs)}${result.restored ? "  (restored)" : ""}${note}`;
}

export async function main(args: string[] = Deno.args): Promise<number> {
  let options;
  try {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: {
        db: { type: "string" },
        concurrency: { type: "string", default: "4" },
        "poll-ms": { type: "string", default: "5000" },
        "tick-ms": { type: "string", default: "10000" },
        "lease-seconds": { type: "string", default: "30" },
        tools: { type: "string" },
        "inline-sleep-max-ms": { type: "string", default: "5000" },
        "worker-id": { type: "string" },
        "in-process": { type: "boolean", default: false },
        once: { type: "boolean", default: false },
        json: { type: "boolean", default: false },
        migrate: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    if (positionals.length) throw new UsageError(`unexpected argument ${positionals[0]}`);
    options = {
      db: values.db,
      concurrency: positiveInt("concurrency", values.concurrency),
      pollMs: positiveInt("poll-ms", values["poll-ms"], 10),
      tickMs: positiveInt("tick-ms", values["tick-ms"], 0),
      leaseSeconds: positiveInt("lease-seconds", values["lease-seconds"], 3),
      tools: await loadTools(values.tools),
      toolsModule: values.tools,
      inProcess: values["in-process"],
      inlineSleepMaxMs: positiveInt("inline-sleep-max-ms", values["inline-sleep-max-ms"], 0),
      workerId: values["worker-id"] || `worker-${hostname()}-${Deno.pid}`,
      once: values.once,
      json: values.json,
      migrate: values.migrate,
    };
  } catch (e) {
    console.error(`worker: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const { json } = options;
  const note = (message: string) => console.error(`[worker] ${message}`);

  const db = options.db ?? defaultDb();
  // one connection per running invocation (each host call and transition is a round trip of
  // its own), one for the claim and next-wake queries, one for LISTEN: with the driver's
  // default of 4, invocations at concurrency 8 queued their writes behind each other
  const store = await openStore(db, {
    migrate: options.migrate || db === "pglite",
    poolMax: options.concurrency + 2,
  });
  const executor = options.inProcess ? undefined : new ThreadPool({
    size: options.concurrency,
    driver: store.driver,
    config: {
      workerId: options.workerId,
      leaseSeconds: options.leaseSeconds,
      inlineSleepMaxMs: options.inlineSleepMaxMs,
      durableAll: false,
      spareVm: false,
      ...(options.toolsModule ? { toolsModule: resolve(options.toolsModule) } : {}),
    },
    onNote: note,
  });
  const engine = new Engine({
    store,
    tools: new ToolRegistry(store, {
      http: httpOptionsFromEnv(Deno.env),
      custom: options.tools,
      completionBaseUrl: completionBaseUrlFromEnv(Deno.env),
    }),
    workerId: options.workerId,
    leaseSeconds: options.leaseSeconds,
    inlineSleepMaxMs: options.inlineSleepMaxMs,
    // a run claimed by an idle worker starts ~3 ms sooner (enqueue → start)
    spareVm: true,
    executor,
  });
  const worker = new WorkerLoop(store, engine, {
    concurrency: options.concurrency,
    pollMs: options.pollMs,
    tickMs: options.tickMs,
    once: options.once,
    onInvocation: (result) => console.log(invocationLine(result, json)),
    onError: (e, where) => {
      const message = (e as Error)?.message ?? String(e);
      if (where.runId) {
        // an invocation line too, so every claimed run shows up on stdout
        console.log(
          json
            ? JSON.stringify({
              at: new Date().toISOString(),
              runId: where.runId,
              task: where.task,
              status: "error",
              error: message,
            })
            : `${new Date().toISOString()}  ${
              "error".padEnd(9)
            }  ${where.runId}  ${where.task}  ${message}`,
        );
      }
      note(`${where.what}${where.runId ? ` of ${where.runId}` : ""} failed: ${message}`);
    },
  });

  let signalled = false;
  const onSignal = (signal: Deno.Signal) => () => {
    if (signalled) {
      note(`${signal} again: exiting now; the leases of running runs will run out`);
      Deno.exit(1);
    }
    signalled = true;
    note(`${signal}: handing over ${worker.running} running run(s), then exiting`);
    worker.stop();
  };
  const signals: [Deno.Signal, () => void][] = [];
  for (const signal of ["SIGINT", "SIGTERM"] as Deno.Signal[]) {
    try {
      const handler = onSignal(signal);
      Deno.addSignalListener(signal, handler);
      signals.push([signal, handler]);
    } catch {
      // SIGTERM cannot be listened to on Windows
    }
  }

  try {
    await worker.start();
    note(
      `${options.workerId} on ${store.description}: up to ${options.concurrency} at once` +
        (executor ? ` on ${options.concurrency} thread(s), ` : " in-process, ") +
        (options.once
          ? "until nothing is due"
          : `${
            worker.stats.listening ? "woken by NOTIFY, " : ""
          }polling every ${options.pollMs} ms`),
    );
    const stats = await worker.finished;
    const statuses = Object.entries(stats.statuses).map(([s, n]) => `${n} ${s}`).join(", ");
    note(
      `stopped after ${stats.invocations} invocation(s)${statuses ? ` (${statuses})` : ""}` +
        (stats.errors ? `, ${stats.errors} error(s)` : ""),
    );
    return options.once && stats.errors > 0 ? 1 : 0;
  } finally {
    for (const [signal, handler] of signals) Deno.removeSignalListener(signal, handler);
    await engine.close();
    await store.close();
  }
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (e) {
    console.error(`worker: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
