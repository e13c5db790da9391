#!/usr/bin/env -S deno run -A
/**
 * `deno task serve`: the edge function's app on http://localhost:$PORT (default 8000). With
 * SUPABASE_DB_URL, DATABASE_URL or SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY it is exactly
 * what Supabase runs (index.ts); without, it runs over an in-memory PGlite with
 * examples/tasks published, for trying things (everything is lost on exit).
 */
import { fileURLToPath } from "node:url";
import { Store } from "../supabase/functions/_shared/quickjs/mod.ts";
import { publishTasks } from "../supabase/functions/_shared/quickjs/dev.ts";
import edge from "../supabase/functions/quickjs/index.ts";
import { preflight } from "../supabase/functions/quickjs/http/app.ts";
import { appForStore, driverFromEnv } from "../supabase/functions/quickjs/http/setup.ts";
import { openStore } from "./lib/open_store.ts";

const EXAMPLES_DIR = new URL("../examples/tasks/", import.meta.url);

async function devHandler(): Promise<(request: Request) => Promise<Response>> {
  console.warn(
    "quickjs: no SUPABASE_DB_URL, DATABASE_URL or SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY; " +
      "using an in-memory PGlite with the example tasks (everything is lost on exit)",
  );
  const store: Store = await openStore("pglite");
  await publishTasks(store, fileURLToPath(EXAMPLES_DIR));
  const allowOrigin = Deno.env.get("QUICKJS_ALLOW_ORIGIN") || "*";
  const app = appForStore(store, Deno.env, allowOrigin);
  return (request) =>
    request.method === "OPTIONS" ? Promise.resolve(preflight(allowOrigin)) : app(request);
}

async function main(): Promise<void> {
  const handler = driverFromEnv(Deno.env) ? edge.fetch : await devHandler();
  Deno.serve({ port: Number(Deno.env.get("PORT") ?? 8000) }, handler);
}

if (import.meta.main) await main();
