#!/usr/bin/env -S deno run -A
/**
 * `deno task serve`: the edge function's app on http://localhost:$PORT (default 8000). With
 * SUPABASE_DB_URL, DATABASE_URL or SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY it serves the
 * database Supabase would; without, an in-memory PGlite with examples/tasks published, for
 * trying things (everything is lost on exit).
 *
 * Unlike the edge runtime, which has no Web Workers, a local server has threads: runs
 * execute on a pool of QUICKJS_THREADS threads (default 4), each stopped by a watchdog if a
 * task holds it past its slice inside a built-in the interrupt cannot reach
 * (scripts/lib/threads/). QUICKJS_THREADS=0 serves exactly index.ts, runs on its thread.
 */
import { fileURLToPath } from "node:url";
import { Store } from "../supabase/functions/_shared/quickjs/mod.ts";
import { publishTasks } from "../supabase/functions/_shared/quickjs/dev.ts";
import edge from "../supabase/functions/quickjs/index.ts";
import { preflight } from "../supabase/functions/quickjs/http/app.ts";
import { appForStore, driverFromEnv } from "../supabase/functions/quickjs/http/setup.ts";
import { openStore } from "./lib/open_store.ts";
import { ThreadPool } from "./lib/threads/pool.ts";

const EXAMPLES_DIR = new URL("../examples/tasks/", import.meta.url);

function threadCount(): number {
  const text = Deno.env.get("QUICKJS_THREADS") ?? "4";
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) {
    throw new Error(`QUICKJS_THREADS must be a whole number (0: no threads), got ${text}`);
  }
  return n;
}

async function devStore(): Promise<Store> {
  console.warn(
    "quickjs: no SUPABASE_DB_URL, DATABASE_URL or SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY; " +
      "using an in-memory PGlite with the example tasks (everything is lost on exit)",
  );
  const store: Store = await openStore("pglite");
  await publishTasks(store, fileURLToPath(EXAMPLES_DIR));
  return store;
}

async function handler(): Promise<(request: Request) => Promise<Response>> {
  const driver = driverFromEnv(Deno.env);
  const threads = threadCount();
  if (driver && threads === 0) return edge.fetch;
  const store = driver ? new Store(driver) : await devStore();
  const workerId = `serve-${crypto.randomUUID().slice(0, 8)}`;
  const executor = threads === 0 ? undefined : new ThreadPool({
    size: threads,
    driver: store.driver,
    config: {
      workerId,
      leaseSeconds: 30,
      inlineSleepMaxMs: 5_000,
      durableAll: false,
      spareVm: false,
    },
    onNote: (message) => console.warn(`quickjs: ${message}`),
  });
  await executor?.prepare();
  const allowOrigin = Deno.env.get("QUICKJS_ALLOW_ORIGIN") || "*";
  const app = appForStore(store, Deno.env, allowOrigin, { executor, workerId });
  return (request) =>
    request.method === "OPTIONS" ? Promise.resolve(preflight(allowOrigin)) : app(request);
}

async function main(): Promise<void> {
  Deno.serve({ port: Number(Deno.env.get("PORT") ?? 8000) }, await handler());
}

if (import.meta.main) await main();
