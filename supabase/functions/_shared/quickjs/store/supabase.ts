/**
 * Store driver over supabase-js: SUPABASE_URL plus the service role key, each operation a
 * PostgREST RPC call (/rest/v1/rpc/<fn>) into the quickjs schema, which must be exposed
 * (supabase/config.toml, [api] schemas). The one driver where bytes travel as text: JSON has
 * no bytes, so bytea goes both ways in its "\x…" hex form, which PostgREST reads and writes.
 */
import { createClient } from "@supabase/supabase-js";
import {
  byteaFromHex,
  type Operation,
  type OperationArgs,
  type OperationResult,
  OPERATIONS,
  rpcBody,
  SCHEMA,
  sqlResult,
} from "./operations.ts";
import type { SqlDriver } from "./store.ts";

export function supabaseDriver(
  url: string,
  serviceRoleKey: string,
  options: { fetch?: typeof fetch } = {},
): SqlDriver {
  const client = createClient(url, serviceRoleKey, {
    db: { schema: SCHEMA },
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    global: options.fetch ? { fetch: options.fetch } : {},
  });
  return {
    kind: "supabase",
    description: url,
    async call<Op extends Operation>(
      op: Op,
      args: OperationArgs<Op>,
    ): Promise<OperationResult<Op>> {
      const { data, error } = await client.rpc(op, rpcBody(op, args));
      if (error) throw error;
      // PostgREST answers a scalar function with its value and a table function with an
      // array of row objects, bytea as "\x…" hex text
      const rows = Array.isArray(data) && OPERATIONS[op].returns.kind === "rows"
        ? data as Record<string, unknown>[]
        : [{ result: data }];
      return sqlResult(op, rows, (value) => byteaFromHex(value as string));
    },
    close: () => Promise.resolve(),
  };
}
