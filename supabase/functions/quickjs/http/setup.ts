/**
 * Builds the function's app from the environment: which database (postgres.js over a URL,
 * or supabase-js over the REST API), which keys authenticate callers, which hosts
 * `tools.http.fetch` may reach. index.ts uses it on Supabase; `deno task serve` uses it
 * over a local dev database.
 */
import {
  type ClaimedRun,
  Engine,
  type EngineConfig,
  httpOptionsFromEnv,
  type InvocationSignals,
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

/**
 * The edge runtime dispatches `beforeunload` shortly before it ends a worker (reasons cpu,
 * memory, wall_clock, early_drop, termination): from then on every invocation hands its
 * run over at its next idle point (snapshot, suspend, due at once) instead of being lost
 * to the lease's expiry.
 */
function handOverOnUnload(): AbortSignal {
  const unload = new AbortController();
  globalThis.addEventListener("beforeunload", (event) => {
    const reason = (event as CustomEvent<{ reason?: string } | undefined>).detail?.reason;
    if (!unload.signal.aborted) {
      console.warn(`quickjs: beforeunload (${reason ?? "?"}): handing runs over`);
    }
    unload.abort(reason);
  });
  return unload.signal;
}

/** An engine whose invocations all yield when the worker is about to end. */
class EdgeEngine extends Engine {
  constructor(readonly unload: AbortSignal, config: EngineConfig) {
    super(config);
  }

  override runClaimed(run: ClaimedRun, signals: InvocationSignals = {}) {
    return super.runClaimed(run, { ...signals, yield: signals.yield ?? this.unload });
  }
}

/** The app over a store, with the engine, tools and auth the environment configures. */
export function appForStore(store: Store, env: Env, allowOrigin: string): App {
  const get = (name: string) => env.get(name) || undefined;
  const engine = new EdgeEngine(handOverOnUnload(), {
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
