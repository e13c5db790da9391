/**
 * Builds the function's app from the environment: which database (postgres.js over a URL,
 * or supabase-js over the REST API), which keys authenticate callers, which hosts
 * `tools.http.fetch` may reach. index.ts uses it on Supabase; `deno task serve` uses it
 * over a local dev database.
 */
import {
  Engine,
  httpOptionsFromEnv,
  type IsolateLife,
  postgresDriver,
  type SqlDriver,
  Store,
  supabaseDriver,
  ToolRegistry,
} from "../../_shared/quickjs/mod.ts";
import { createApp } from "./app.ts";

export type Env = { get(name: string): string | undefined };
export type App = (request: Request) => Promise<Response>;

/** The database the environment names, or undefined when it names none. */
export function driverFromEnv(env: Env): SqlDriver | undefined {
  const get = (name: string) => env.get(name) || undefined;
  const url = get("SUPABASE_DB_URL") ?? get("DATABASE_URL");
  if (url) return postgresDriver(url);
  const api = get("SUPABASE_URL");
  const key = get("SUPABASE_SERVICE_ROLE_KEY");
  if (api && key) return supabaseDriver(api, key);
  return undefined;
}

/** The app over a store, with the engine, tools and auth the environment configures. */
export function appForStore(
  store: Store,
  env: Env,
  allowOrigin: string,
  options: { isolate?: IsolateLife } = {},
): App {
  const get = (name: string) => env.get(name) || undefined;
  const engine = new Engine({
    store,
    tools: new ToolRegistry(store, { http: httpOptionsFromEnv(env) }),
    workerId: `edge-${crypto.randomUUID().slice(0, 8)}`,
    isolate: options.isolate,
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
