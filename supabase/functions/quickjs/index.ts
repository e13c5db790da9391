/**
 * The `quickjs` edge function. The app is built once, on the first request that needs it,
 * from the environment; importing this module touches neither the database nor files.
 */
import { Engine } from "./engine/run_loop.ts";
import { httpOptionsFromEnv } from "./engine/http_tool.ts";
import { ToolRegistry } from "./engine/tools.ts";
import { createApp, preflight, withCors } from "./http/app.ts";
import { errorResponse } from "./http/errors.ts";
import { migrate, pgliteExecutor } from "./store/migrate.ts";
import { pgliteDriver } from "./store/pglite.ts";
import { postgresDriver } from "./store/postgres.ts";
import { type SqlDriver, Store } from "./store/store.ts";
import { supabaseDriver } from "./store/supabase.ts";
import { fileURLToPath } from "node:url";

type Env = { get(name: string): string | undefined };
type App = (request: Request) => Promise<Response>;

const EXAMPLES_DIR = new URL("../../../examples/tasks/", import.meta.url);

let app: Promise<App> | undefined;

async function fetch(request: Request): Promise<Response> {
  const allowOrigin = Deno.env.get("QUICKJS_ALLOW_ORIGIN") || "*";
  // a browser's preflight must not wait for (or fail with) the database
  if (request.method === "OPTIONS") return preflight(allowOrigin);
  app ??= appFromEnv(Deno.env, allowOrigin).catch((e) => {
    app = undefined; // the next request tries again
    throw e;
  });
  let handle: App;
  try {
    handle = await app;
  } catch (e) {
    return withCors(errorResponse(e), allowOrigin);
  }
  return await handle(request);
}

async function appFromEnv(env: Env, allowOrigin: string): Promise<App> {
  const get = (name: string) => env.get(name) || undefined;
  const store = new Store(await driverFromEnv(get));
  const engine = new Engine({
    store,
    tools: new ToolRegistry(store, { http: httpOptionsFromEnv(env) }),
    workerId: `edge-${crypto.randomUUID().slice(0, 8)}`,
  });
  return createApp({
    store,
    engine,
    allowOrigin,
    auth: {
      serviceRoleKey: get("SUPABASE_SERVICE_ROLE_KEY"),
      jwtSecret: get("SUPABASE_JWT_SECRET"),
      jwksUrl: get("SUPABASE_JWKS_URL"),
    },
  });
}

async function driverFromEnv(get: (name: string) => string | undefined): Promise<SqlDriver> {
  const url = get("SUPABASE_DB_URL") ?? get("DATABASE_URL");
  if (url) return postgresDriver(url);
  const api = get("SUPABASE_URL");
  const key = get("SUPABASE_SERVICE_ROLE_KEY");
  if (api && key) return supabaseDriver(api, key);
  console.warn(
    "quickjs: no SUPABASE_DB_URL, DATABASE_URL or SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY; " +
      "using an in-memory PGlite with the example tasks (everything is lost on exit)",
  );
  return await devDatabase();
}

/** The dev fallback: a migrated in-memory PGlite with examples/tasks/*.js published. */
async function devDatabase(): Promise<SqlDriver> {
  const driver = await pgliteDriver();
  await migrate(pgliteExecutor(driver.db));
  try {
    // the same loader as `deno task publish` (names, @limits, @tools); dev only
    const { publishTasks } = await import("../../../scripts/lib/task_files.ts");
    await publishTasks(new Store(driver), fileURLToPath(EXAMPLES_DIR));
  } catch (e) {
    // deployed bundles carry no examples folder
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return driver;
}

export default { fetch } satisfies Deno.ServeDefaultExport;

// `deno task serve` runs this file. Supabase's runtime serves the default export itself, and
// its Deno.serve always binds the same port: serving here too would fail the boot there.
if (import.meta.main && !("EdgeRuntime" in globalThis)) {
  Deno.serve({ port: Number(Deno.env.get("PORT") ?? 8000) }, fetch);
}
