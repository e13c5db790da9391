/**
 * The HTTP API of the `quickjs` edge function as one request handler: CORS, routing,
 * authentication, then the route's handler; every error becomes JSON in one place.
 */
import type { Engine, Store } from "../../_shared/quickjs/mod.ts";
import { type AuthConfig, createAuthenticator } from "./auth.ts";
import { errorResponse, HttpError } from "./errors.ts";
import {
  cancelRun,
  completeCall,
  getRun,
  type Handler,
  type HandlerDeps,
  heartbeatCall,
  resumeRun,
  startRun,
  tick,
} from "./handlers.ts";
import { startRunBody } from "./schemas.ts";

export type { AuthConfig } from "./auth.ts";

export interface AppDeps {
  store: Store;
  engine: Engine;
  auth: AuthConfig;
  /** Largest request body (default 1 MiB). */
  maxBodyBytes?: number;
  /** Longest a request body may take to arrive (default 15 s); then 408 BODY_TIMEOUT. */
  bodyTimeoutMs?: number;
  allowOrigin?: string;
  /** Longest `wait` of POST /runs (default 25 s, well inside the platform's request limit). */
  maxWaitMs?: number;
  /**
   * Longest POST /runs/:id/resume waits for its invocation (default 25 s, as `wait`); then
   * 202, the invocation going on in the background.
   */
  resumeWaitMs?: number;
  /** Keeps work going after the response (default: EdgeRuntime.waitUntil on Supabase). */
  runInBackground?: (work: Promise<unknown>) => void;
}

export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;
export const DEFAULT_MAX_WAIT_MS = 25_000;
/**
 * 1 MiB arrives in 15 s at 70 KB/s, a poor mobile link; a client slower than that, or one
 * that stops sending, would otherwise hold the request (and its isolate) until the
 * platform's own limit.
 */
export const DEFAULT_BODY_TIMEOUT_MS = 15_000;

type Method = "GET" | "POST";

/** Paths below /quickjs; `:id` segments are handed to the handler unparsed. */
const ROUTES: { path: RegExp; methods: Partial<Record<Method, Handler>> }[] = [
  { path: /^\/runs$/, methods: { POST: startRun } },
  { path: /^\/runs\/(?<id>[^/]+)$/, methods: { GET: getRun } },
  { path: /^\/runs\/(?<id>[^/]+)\/cancel$/, methods: { POST: cancelRun } },
  { path: /^\/runs\/(?<id>[^/]+)\/resume$/, methods: { POST: resumeRun } },
  {
    path: /^\/runs\/(?<id>[^/]+)\/calls\/(?<seq>[^/]+)\/complete$/,
    methods: { POST: completeCall },
  },
  {
    path: /^\/runs\/(?<id>[^/]+)\/calls\/(?<seq>[^/]+)\/heartbeat$/,
    methods: { POST: heartbeatCall },
  },
  { path: /^\/tick$/, methods: { POST: tick } },
];

/**
 * Supabase hands the function `/quickjs/...`; behind other proxies the public path
 * `/functions/v1/quickjs/...` may arrive whole.
 */
const PREFIX = /^(?:\/functions\/v1)?\/quickjs(?=\/|$)/;

function findRoute(
  pathname: string,
): { methods: Partial<Record<Method, Handler>>; params: Record<string, string> } | undefined {
  const prefix = pathname.match(PREFIX);
  if (!prefix) return undefined;
  const path = pathname.slice(prefix[0].length).replace(/\/$/, "");
  for (const route of ROUTES) {
    const found = route.path.exec(path);
    if (found) return { methods: route.methods, params: { ...found.groups } };
  }
  return undefined;
}

export function createApp(deps: AppDeps): (request: Request) => Promise<Response> {
  const allowOrigin = deps.allowOrigin ?? "*";
  const authenticate = createAuthenticator(deps.auth);
  const handlerDeps: HandlerDeps = {
    store: deps.store,
    engine: deps.engine,
    body: {
      maxBytes: deps.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
      timeoutMs: deps.bodyTimeoutMs ?? DEFAULT_BODY_TIMEOUT_MS,
    },
    startRunSchema: startRunBody(deps.maxWaitMs ?? DEFAULT_MAX_WAIT_MS),
    runInBackground: deps.runInBackground ?? defaultRunInBackground(),
    resumeWaitMs: deps.resumeWaitMs ?? deps.maxWaitMs ?? DEFAULT_MAX_WAIT_MS,
  };

  async function route(request: Request): Promise<Response> {
    const url = new URL(request.url);
    const found = findRoute(url.pathname);
    if (!found) throw new HttpError(404, "NOT_FOUND", `no route for ${url.pathname}`);
    // own keys only: a method named "toString" must not find Object.prototype's
    const handler = Object.hasOwn(found.methods, request.method)
      ? found.methods[request.method as Method]
      : undefined;
    if (!handler) {
      const allow = [...Object.keys(found.methods), "OPTIONS"].join(", ");
      throw new HttpError(
        405,
        "METHOD_NOT_ALLOWED",
        `${request.method} is not allowed on ${url.pathname}; use ${allow}`,
        { headers: { allow } },
      );
    }
    const caller = await authenticate(request);
    return await handler({
      deps: handlerDeps,
      request,
      caller,
      params: found.params,
    });
  }

  return async (request) => {
    if (request.method === "OPTIONS") return preflight(allowOrigin);
    let response: Response;
    try {
      response = await route(request);
    } catch (e) {
      response = errorResponse(e);
    }
    return withCors(response, allowOrigin);
  };
}

export function corsHeaders(allowOrigin = "*"): Record<string, string> {
  return {
    "access-control-allow-origin": allowOrigin,
    "access-control-allow-headers": "authorization, x-client-info, apikey, content-type",
    "access-control-allow-methods": "GET, POST, OPTIONS",
    // browsers cap this (Chromium at 2 h); a day saves the preflight on every call
    "access-control-max-age": "86400",
  };
}

/** The answer to OPTIONS on any path: needs no database, so index.ts uses it before setup. */
export function preflight(allowOrigin = "*"): Response {
  return new Response(null, { status: 204, headers: corsHeaders(allowOrigin) });
}

export function withCors(response: Response, allowOrigin = "*"): Response {
  for (const [name, value] of Object.entries(corsHeaders(allowOrigin))) {
    response.headers.set(name, value);
  }
  return response;
}

interface EdgeRuntimeGlobal {
  EdgeRuntime?: { waitUntil(work: Promise<unknown>): void };
}

/**
 * On Supabase, EdgeRuntime.waitUntil keeps the isolate alive until the work ends. Elsewhere
 * (Deno.serve) the process lives on anyway; the work is kept until it settles.
 */
function defaultRunInBackground(): (work: Promise<unknown>) => void {
  const pending = new Set<Promise<unknown>>();
  return (work) => {
    const logged = work.catch((e) => {
      console.error("quickjs: background execution failed:", e);
    });
    const runtime = (globalThis as EdgeRuntimeGlobal).EdgeRuntime;
    if (runtime?.waitUntil) {
      runtime.waitUntil(logged);
      return;
    }
    pending.add(logged);
    logged.finally(() => pending.delete(logged));
  };
}
