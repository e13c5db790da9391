/**
 * A test double for PostgREST, which cannot run here: a `fetch` that serves the RPC
 * contract supabase-js uses (POST /rest/v1/rpc/<fn> with named arguments, schema chosen
 * by Content-Profile) against a real database, with PostgREST's status codes and error
 * bodies ({ code, message, details, hint }).
 */
import { OPERATIONS, type SqlDriver } from "../../supabase/functions/_shared/quickjs/mod.ts";

/** Functions declared `returns void`: PostgREST answers them with 204 No Content. */
const VOID_FUNCTIONS = new Set(["kv_set", "append_run_logs"]);

export interface PostgrestDouble {
  fetch: typeof fetch;
  /** Every request it served, for assertions. */
  requests: { method: string; path: string; profile: string | null; body: unknown }[];
}

export function postgrestDouble(
  driver: SqlDriver,
  options: { serviceRoleKey: string; exposedSchemas?: string[] },
): PostgrestDouble {
  const exposed = options.exposedSchemas ?? ["public", "quickjs"];
  const requests: PostgrestDouble["requests"] = [];
  const doubleFetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const request = new Request(input, init);
    const url = new URL(request.url);
    const profile = request.headers.get("content-profile") ?? request.headers.get("accept-profile");
    const body = request.method === "POST"
      ? await request.json().catch(() => undefined)
      : undefined;
    requests.push({ method: request.method, path: url.pathname, profile, body });
    const bearer = request.headers.get("authorization")?.replace(/^Bearer\s+/i, "");
    if (
      request.headers.get("apikey") !== options.serviceRoleKey || bearer !== options.serviceRoleKey
    ) {
      return error(401, "PGRST301", "JWT could not be decoded", null);
    }
    const match = /^\/rest\/v1\/rpc\/([a-z_]+)$/.exec(url.pathname);
    if (!match || request.method !== "POST") {
      return error(404, "PGRST125", `Invalid path ${url.pathname}`, null);
    }
    const schema = profile ?? "public";
    if (!exposed.includes(schema)) {
      return error(
        406,
        "PGRST106",
        `The schema must be one of the following: ${exposed.join(", ")}`,
        null,
      );
    }
    const fn = match[1]!;
    const signature = (OPERATIONS as Record<string, Record<string, string>>)[fn];
    const args = (body ?? {}) as Record<string, unknown>;
    if (
      schema !== "quickjs" || !signature || typeof args !== "object" ||
      Object.keys(args).some((name) => !(name in signature))
    ) {
      return error(
        404,
        "PGRST202",
        `Could not find the function ${schema}.${fn}(${
          Object.keys(args).join(", ")
        }) in the schema cache`,
        null,
      );
    }
    try {
      const result = await driver.call(fn as never, args as never);
      if (VOID_FUNCTIONS.has(fn)) return new Response(null, { status: 204 });
      return new Response(JSON.stringify(result), {
        status: 200,
        headers: { "content-type": "application/json; charset=utf-8" },
      });
    } catch (e) {
      const err = e as { code?: string; message?: string; detail?: string; hint?: string };
      // PostgREST: raise_exception and custom SQLSTATEs are 400; unique violations 409
      const status = err.code === "23505" ? 409 : err.code?.startsWith("42") ? 400 : 400;
      return error(
        status,
        err.code ?? "XX000",
        err.message ?? String(e),
        err.hint ?? null,
        err.detail,
      );
    }
  };
  return { fetch: doubleFetch as typeof fetch, requests };
}

function error(
  status: number,
  code: string,
  message: string,
  hint: string | null,
  details: string | null = null,
): Response {
  return new Response(JSON.stringify({ code, details: details ?? null, hint, message }), {
    status,
    headers: { "content-type": "application/json; charset=utf-8" },
  });
}
