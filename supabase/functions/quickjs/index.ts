/**
 * The `quickjs` edge function. The app is built once, on the first request that needs it,
 * from the environment; importing this module touches neither the database nor files.
 * Local development serves the same app over an embedded database: `deno task serve`.
 */
import {
  getBuild,
  IsolateLife,
  isolateLimitsFromEnv,
  Store,
  WasmMissingError,
} from "../_shared/quickjs/mod.ts";
import { preflight, withCors } from "./http/app.ts";
import { errorResponse, HttpError } from "./http/errors.ts";
import { type App, appForStore, driverFromEnv, type Env } from "./http/setup.ts";

let app: Promise<App> | undefined;

/**
 * This worker's life as the platform counts it, from the process's start: runs suspend at
 * an idle point before its wall clock or CPU runs out, and at `beforeunload`.
 */
let isolate: IsolateLife | undefined;

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
  const driver = driverFromEnv(env);
  if (!driver) {
    console.error("quickjs: no database configured");
    throw new HttpError(
      500,
      "NOT_CONFIGURED",
      "the function has no database: set QUICKJS_DB_POOLER_URL, SUPABASE_DB_URL (or " +
        "DATABASE_URL), or SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY (or SUPABASE_SECRET_KEYS)",
    );
  }
  // a deploy without `deno task prepare-deploy` fails here, at the app's boot (its first
  // request), with WASM_MISSING, rather than inside the first run it tries
  await getBuild().catch((e) => {
    if (!(e instanceof WasmMissingError)) throw e;
    console.error(`quickjs: ${e.message}`);
    throw new HttpError(500, e.code, e.message, { cause: e });
  });
  if (!isolate) {
    isolate = new IsolateLife(isolateLimitsFromEnv(env));
    isolate.listen();
  }
  return appForStore(new Store(driver), env, allowOrigin, { isolate });
}

export default { fetch } satisfies Deno.ServeDefaultExport;
