/**
 * A test double for PostgREST, which cannot run here: a `fetch` that serves the RPC
 * contract supabase-js uses (POST /rest/v1/rpc/<fn> with named arguments, schema chosen
 * by Content-Profile) against a real database, with PostgREST's status codes and error
 * bodies ({ code, message, details, hint }). Like PostgREST it reads a bytea argument from
 * its "\x…" hex text and writes bytea columns the same way, answers a void function with
 * 204 and a table function with an array of row objects.
 */
import {
  byteaFromHex,
  byteaHex,
  type Operation,
  type OperationArgs,
  OPERATIONS,
  paramType,
  type SqlDriver,
  type SqlType,
} from "../../supabase/functions/_shared/quickjs/mod.ts";

export interface PostgrestDouble {
  fetch: typeof fetch;
  /** Every request it served, for assertions. */
  requests: { method: string; path: string; profile: string | null; body: unknown }[];
}

export function postgrestDouble(
  driver: SqlDriver,
  options: {
    serviceRoleKey: string;
    exposedSchemas?: string[];
    /** Where to record the requests (default: a new array). */
    requests?: PostgrestDouble["requests"];
  },
): PostgrestDouble {
  const exposed = options.exposedSchemas ?? ["public", "quickjs"];
  const requests = options.requests ?? [];
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
    const declared = Object.hasOwn(OPERATIONS, fn) ? OPERATIONS[fn as Operation] : undefined;
    const signature: Record<string, SqlType> = Object.fromEntries(
      Object.entries(declared?.params ?? {}).map(([name, param]) => [name, paramType(param)]),
    );
    const args = (body ?? {}) as Record<string, unknown>;
    if (
      schema !== "quickjs" || !declared || typeof args !== "object" ||
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
    // PostgREST passes each argument as text to the parameter's type
    const typed = Object.fromEntries(
      Object.entries(args).map((
        [name, value],
      ) => [
        name,
        signature[name] === "bytea" && typeof value === "string" ? byteaFromHex(value) : value,
      ]),
    ) as OperationArgs<Operation>;
    try {
      const result = await driver.call(fn as Operation, typed);
      if (declared.returns.kind === "scalar" && declared.returns.sql === "void") {
        return new Response(null, { status: 204 });
      }
      const json = JSON.stringify(
        result,
        (_key, value) => value instanceof Uint8Array ? byteaHex(value) : value,
      );
      return new Response(json, {
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
