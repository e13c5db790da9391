/**
 * Store driver over supabase-js: SUPABASE_URL plus the service role key, each operation a
 * PostgREST RPC call (/rest/v1/rpc/<fn>) into the quickjs schema, which must be exposed
 * (supabase/config.toml, [api] schemas).
 */
import { createClient } from "@supabase/supabase-js";
import { type Operation, type OperationArgs, rpcBody, SCHEMA } from "./operations.ts";
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
    async call<Op extends Operation>(op: Op, args: OperationArgs<Op>) {
      const { data, error } = await client.rpc(op, rpcBody(op, args));
      if (error) throw error;
      return data ?? null;
    },
    close: () => Promise.resolve(),
  };
}
