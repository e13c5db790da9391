/**
 * Builds the function's app from the environment: which database (postgres.js over a URL,
 * or supabase-js over the REST API), which keys authenticate callers, which hosts
 * `tools.http.fetch` may reach. index.ts uses it on Supabase; `deno task serve` uses it
 * over a local dev database.
 */
import {
  completionBaseUrlFromEnv,
  Engine,
  httpOptionsFromEnv,
  type IsolateLife,
  postgresDriver,
  type RunExecutor,
  type SqlDriver,
  Store,
  supabaseDriver,
  ToolRegistry,
} from "../../_shared/quickjs/mod.ts";
import type { JSONWebKeySet } from "jose";
import { type AuthConfig, createApp } from "./app.ts";

export type Env = { get(name: string): string | undefined };
export type App = (request: Request) => Promise<Response>;

/**
 * The function's pool: an edge worker serves a few requests at a time and lives minutes,
 * so few connections, closed when idle; no prepared statements, so that it works through
 * Supabase's transaction pooler (which also rules out session state and LISTEN: the
 * function uses neither).
 */
export const EDGE_POOL = Object.freeze({ max: 3, idleTimeout: 20, prepare: false });

/**
 * The database URL the environment names: QUICKJS_DB_POOLER_URL (a transaction pooler,
 * e.g. Supavisor on port 6543; a name that `supabase secrets set` accepts) before the
 * platform's direct SUPABASE_DB_URL, then DATABASE_URL.
 */
export function databaseUrlFromEnv(env: Env): string | undefined {
  const get = (name: string) => env.get(name) || undefined;
  return get("QUICKJS_DB_POOLER_URL") ?? get("SUPABASE_DB_URL") ?? get("DATABASE_URL");
}

/** The database the environment names, or undefined when it names none. */
export function driverFromEnv(env: Env): SqlDriver | undefined {
  const get = (name: string) => env.get(name) || undefined;
  const url = databaseUrlFromEnv(env);
  if (url) return postgresDriver(url, EDGE_POOL);
  const api = get("SUPABASE_URL");
  const key = get("SUPABASE_SERVICE_ROLE_KEY") ?? secretKeys(get("SUPABASE_SECRET_KEYS"))[0];
  if (api && key) return supabaseDriver(api, key);
  return undefined;
}

/**
 * Who may call, from what a hosted project provides: SUPABASE_SECRET_KEYS (a JSON object
 * of name → `sb_secret_…` key) and the legacy SUPABASE_SERVICE_ROLE_KEY for service
 * callers; SUPABASE_JWKS, else the project's JWKS endpoint under SUPABASE_URL, for users'
 * tokens. An HS256 secret may be set as QUICKJS_JWT_SECRET (SUPABASE_JWT_SECRET is read
 * too, where it exists: self-hosting, the local CLI).
 */
export function authFromEnv(env: Env): AuthConfig {
  const get = (name: string) => env.get(name) || undefined;
  const project = get("SUPABASE_URL")?.replace(/\/+$/, "");
  return {
    serviceRoleKey: get("SUPABASE_SERVICE_ROLE_KEY"),
    serviceKeys: secretKeys(get("SUPABASE_SECRET_KEYS")),
    jwtSecret: get("QUICKJS_JWT_SECRET") ?? get("SUPABASE_JWT_SECRET"),
    jwks: jwksFrom(get("SUPABASE_JWKS")),
    jwksUrl: get("QUICKJS_JWKS_URL") ?? get("SUPABASE_JWKS_URL") ??
      (project ? `${project}/auth/v1/.well-known/jwks.json` : undefined),
  };
}

/** The keys of SUPABASE_SECRET_KEYS: `{"default": "sb_secret_…", …}`. */
export function secretKeys(json: string | undefined): string[] {
  if (!json) return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    throw new Error("SUPABASE_SECRET_KEYS is not JSON (expected an object of name → key)");
  }
  const values = typeof parsed === "string"
    ? [parsed]
    : Array.isArray(parsed)
    ? parsed
    : parsed && typeof parsed === "object"
    ? Object.values(parsed)
    : [];
  return values.filter((key): key is string => typeof key === "string" && key.length > 0);
}

/** SUPABASE_JWKS: `{"keys": [...]}` (a bare array of keys is taken too). */
export function jwksFrom(json: string | undefined): JSONWebKeySet | undefined {
  if (!json) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    throw new Error('SUPABASE_JWKS is not JSON (expected a JWKS: {"keys": [...]})');
  }
  const keys = Array.isArray(parsed) ? parsed : (parsed as { keys?: unknown })?.keys;
  if (!Array.isArray(keys)) throw new Error("SUPABASE_JWKS has no keys array");
  return { keys } as JSONWebKeySet;
}

/** The app over a store, with the engine, tools and auth the environment configures. */
/**
 * `isolate`: the worker's life as the platform counts it; its `beforeunload` makes every
 * invocation hand its run over at the next idle point (index.ts listens for it).
 * `executor`: where invocations run (`deno task serve`: a pool of threads, whose engines
 * hold leases as `workerId`; the edge function has none, and runs them on its own thread).
 */
export function appForStore(
  store: Store,
  env: Env,
  allowOrigin: string,
  options: { isolate?: IsolateLife; executor?: RunExecutor; workerId?: string } = {},
): App {
  const engine = new Engine({
    store,
    tools: new ToolRegistry(store, {
      http: httpOptionsFromEnv(env),
      completionBaseUrl: completionBaseUrlFromEnv(env),
    }),
    workerId: options.workerId ?? `edge-${crypto.randomUUID().slice(0, 8)}`,
    isolate: options.isolate,
    executor: options.executor,
  });
  return createApp({
    store,
    engine,
    allowOrigin,
    auth: authFromEnv(env),
  });
}
