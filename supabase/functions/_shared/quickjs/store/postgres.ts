/** Store driver over postgres.js: SUPABASE_DB_URL or DATABASE_URL, or any connection string. */
import postgres from "postgres";
import {
  asUint8Array,
  type Operation,
  type OperationArgs,
  type OperationResult,
  sqlCall,
  sqlResult,
} from "./operations.ts";
import type { SqlDriver } from "./store.ts";

export interface PostgresOptions {
  /** Connections at most (default 4). */
  max?: number;
  /** Seconds after which an idle connection is closed (default: never). */
  idleTimeout?: number;
  /**
   * Named prepared statements; a transaction pooler needs false (PgBouncer in transaction
   * mode hands the next transaction another server connection, which lacks the statement).
   * Default: true, unless QUICKJS_DB_PREPARE=false (a worker, or the tests, behind one).
   */
  prepare?: boolean;
}

function preparedByDefault(): boolean {
  try {
    return Deno.env.get("QUICKJS_DB_PREPARE") !== "false";
  } catch {
    return true; // no env permission: the option decides
  }
}

export function postgresDriver(url: string, options: PostgresOptions = {}): SqlDriver {
  const sql = postgres(url, {
    max: options.max ?? 4,
    ...(options.idleTimeout !== undefined ? { idle_timeout: options.idleTimeout } : {}),
    prepare: options.prepare ?? preparedByDefault(),
    onnotice: () => {},
    connection: { application_name: "quickjs" },
  });
  return {
    kind: "postgres",
    description: redactUrl(url),
    async call<Op extends Operation>(
      op: Op,
      args: OperationArgs<Op>,
    ): Promise<OperationResult<Op>> {
      // postgres.js infers a type from a plain JS value (a boolean is a bool, not jsonb):
      // mark JSON explicitly
      const { text, params } = sqlCall(
        op,
        args,
        (type, value) => type === "jsonb" || type === "text[]" ? sql.json(value as never) : value,
      );
      // prepared: postgres.js sends an unprepared query with parameters as Parse/Describe,
      // waits for the parameter types, then Bind/Execute, two round trips for each call;
      // a prepared one is one round trip after its first use (with prepare: false for a
      // transaction pooler, the option given to postgres() wins)
      const rows = await sql.unsafe(text, params as postgres.ParameterOrJSON<never>[], {
        prepare: true,
      });
      // bytea arrives as a Buffer
      return sqlResult(op, rows, (value) => asUint8Array(value as Uint8Array));
    },
    async listen(channel, onNotify) {
      const listener = await sql.listen(channel, onNotify);
      return () => listener.unlisten();
    },
    close: () => sql.end({ timeout: 5 }),
  };
}

/** The URL without its password, for logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "(unparseable url)";
  }
}
