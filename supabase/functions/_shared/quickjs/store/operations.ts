/**
 * The SQL functions the store calls, the one list of database operations: each one's
 * parameters with their SQL types (and the TypeScript type of each value) and its result
 * (a scalar, or rows of jsonb and bytea columns) with its TypeScript type. postgres.js and
 * PGlite turn a call into `select quickjs.fn(p_a => $1::type, …)`; supabase-js sends the
 * same named arguments to PostgREST's /rpc/fn. tests/store/contract_test.ts checks every
 * declaration against the function's signature in pg_proc.
 */
import { Buffer } from "node:buffer";
import type { Json } from "../sandbox/vm.ts";
import type { RunError } from "../sandbox/errors.ts";
import type {
  CallRecord,
  ClaimJson,
  DispatchHealth,
  KvCallResult,
  KvEntry,
  LogLine,
  PublishedTask,
  RepairResult,
  RunView,
  ServiceRow,
  SnapshotInfo,
  SnapshotList,
  StuckRun,
  TaskRetry,
  WaitingOn,
} from "./rows.ts";

export type SqlType =
  | "text"
  | "uuid"
  | "jsonb"
  | "int"
  | "bigint"
  | "boolean"
  | "timestamptz"
  | "text[]"
  | "bytea";

/** The TypeScript value of a parameter of each SQL type, unless the declaration says more. */
export interface SqlValues {
  text: string;
  uuid: string;
  jsonb: Json;
  int: number;
  bigint: number;
  boolean: boolean;
  timestamptz: Date;
  "text[]": string[];
  bytea: Uint8Array;
}

declare const TS: unique symbol;

/** A jsonb parameter whose value has type T (the declaration only; nothing at run time). */
export interface JsonbParam<T> {
  readonly sql: "jsonb";
  readonly [TS]?: T;
}

/** A parameter with a default in SQL: it may be left out. */
export interface Defaulted<P extends SqlType | JsonbParam<unknown>> {
  readonly defaulted: P;
}

/** A parameter: its SQL type, or jsonb with the TypeScript type of its value; maybe defaulted. */
export type Param =
  | SqlType
  | JsonbParam<unknown>
  | Defaulted<SqlType | JsonbParam<unknown>>;

/** The SQL type of a parameter declaration. */
export function paramType(param: Param): SqlType {
  if (typeof param === "string") return param;
  return "defaulted" in param ? paramType(param.defaulted) : param.sql;
}

/** Whether the SQL function has a default for the parameter. */
export function hasDefault(param: Param): boolean {
  return typeof param !== "string" && "defaulted" in param;
}

/** The result of an operation: one scalar column, or rows of named jsonb / bytea columns. */
export type Result =
  | { readonly kind: "scalar"; readonly sql: "jsonb" | "int" | "boolean" | "void" }
  | { readonly kind: "rows"; readonly columns: Readonly<Record<string, "jsonb" | "bytea">> };

/** A result declaration carrying the TypeScript type T of the value. */
export type Typed<R extends Result, T> = R & { readonly [TS]?: T };

const jsonb = <T>(): JsonbParam<T> => ({ sql: "jsonb" });
const d = <P extends SqlType | JsonbParam<unknown>>(param: P): Defaulted<P> => ({
  defaulted: param,
});
const returnsJsonb = <T>(): Typed<{ kind: "scalar"; sql: "jsonb" }, T> => ({
  kind: "scalar",
  sql: "jsonb",
});
const returnsInt: Typed<{ kind: "scalar"; sql: "int" }, number> = { kind: "scalar", sql: "int" };
const returnsBoolean: Typed<{ kind: "scalar"; sql: "boolean" }, boolean> = {
  kind: "scalar",
  sql: "boolean",
};
const returnsVoid: Typed<{ kind: "scalar"; sql: "void" }, void> = { kind: "scalar", sql: "void" };
/** `returns table (…)`: rows whose columns are jsonb (decoded JSON) or bytea (Uint8Array). */
const returnsRows = <T extends Record<string, unknown>>(
  columns: { [K in keyof T]: T[K] extends Uint8Array | null ? "bytea" : "jsonb" },
): Typed<{ kind: "rows"; columns: Record<string, "jsonb" | "bytea"> }, T[]> => ({
  kind: "rows",
  columns,
});

export const OPERATIONS = {
  publish_task: {
    params: {
      p_name: "text",
      p_code: "text",
      p_description: d("text"),
      p_limits: d(jsonb<Record<string, number>>()),
      p_allowed_tools: d("text[]"),
      p_retry: d(jsonb<TaskRetry | null>()),
    },
    returns: returnsJsonb<PublishedTask>(),
  },
  enqueue_run: {
    params: {
      p_task: d("text"),
      p_task_id: d("uuid"),
      p_input: d("jsonb"),
      p_idempotency_key: d("text"),
      p_owner_id: d("uuid"),
      p_run_at: d("timestamptz"),
      p_now: d("timestamptz"),
      p_announce: d("boolean"),
      p_input_text: d("text"),
    },
    returns: returnsJsonb<RunView>(),
  },
  claim_runs: {
    params: {
      p_worker: "text",
      p_limit: d("int"),
      p_lease_seconds: d("int"),
      p_run_id: d("uuid"),
      p_now: d("timestamptz"),
    },
    returns: returnsRows<{ run: ClaimJson; snapshot: Uint8Array | null }>({
      run: "jsonb",
      snapshot: "bytea",
    }),
  },
  heartbeat: {
    params: {
      p_run_id: "uuid",
      p_token: "bigint",
      p_lease_seconds: d("int"),
      p_now: d("timestamptz"),
    },
    returns: returnsJsonb<{ leaseExpiresAt: string }>(),
  },
  record_call: {
    params: {
      p_run_id: "uuid",
      p_token: "bigint",
      p_seq: "int",
      p_service: "text",
      p_method_path: "text[]",
      p_args: jsonb<Json[]>(),
      p_mode: "text",
      p_wake_at: d("timestamptz"),
      p_now: d("timestamptz"),
    },
    returns: returnsJsonb<CallRecord>(),
  },
  start_child: {
    params: {
      p_run_id: "uuid",
      p_token: "bigint",
      p_seq: "int",
      p_task: "text",
      p_input: "jsonb",
      p_max_depth: d("int"),
      p_now: d("timestamptz"),
      p_input_text: d("text"),
    },
    returns: returnsJsonb<CallRecord>(),
  },
  settle_call: {
    params: {
      p_run_id: "uuid",
      p_token: "bigint",
      p_seq: "int",
      p_ok: "boolean",
      p_result: d("jsonb"),
      p_error: d("jsonb"),
      p_logs: d(jsonb<LogLine[]>()),
      p_now: d("timestamptz"),
      p_result_text: d("text"),
    },
    returns: returnsJsonb<CallRecord>(),
  },
  retry_call: {
    params: {
      p_run_id: "uuid",
      p_token: "bigint",
      p_seq: "int",
      p_error: "jsonb",
      p_wake_at: "timestamptz",
      p_logs: d(jsonb<LogLine[]>()),
      p_now: d("timestamptz"),
    },
    returns: returnsJsonb<CallRecord>(),
  },
  issue_completion: {
    params: {
      p_run_id: "uuid",
      p_token: "bigint",
      p_seq: "int",
      p_sha256: "text",
      p_now: d("timestamptz"),
    },
    returns: returnsJsonb<CallRecord>(),
  },
  completion_sent: {
    params: {
      p_run_id: "uuid",
      p_token: "bigint",
      p_seq: "int",
      p_deadline_at: "timestamptz",
      p_now: d("timestamptz"),
    },
    returns: returnsJsonb<CallRecord>(),
  },
  complete_call: {
    params: {
      p_run_id: "uuid",
      p_seq: "int",
      p_completion_token: "text",
      p_ok: "boolean",
      p_result: d("jsonb"),
      p_error: d("jsonb"),
      p_now: d("timestamptz"),
    },
    returns: returnsJsonb<CallRecord & { alreadyCompleted: boolean }>(),
  },
  expire_completions: {
    params: { p_now: d("timestamptz") },
    returns: returnsInt,
  },
  record_settled_call: {
    params: {
      p_run_id: "uuid",
      p_token: "bigint",
      p_seq: "int",
      p_service: "text",
      p_method_path: "text[]",
      p_args: jsonb<Json[]>(),
      p_ok: "boolean",
      p_result: d("jsonb"),
      p_error: d("jsonb"),
      p_started_at: d("timestamptz"),
      p_logs: d(jsonb<LogLine[]>()),
      p_now: d("timestamptz"),
      p_result_text: d("text"),
    },
    returns: returnsJsonb<CallRecord>(),
  },
  kv_call: {
    params: {
      p_run_id: "uuid",
      p_token: "bigint",
      p_seq: "int",
      p_op: "text",
      p_key: "text",
      p_value: "jsonb",
      p_secret: "boolean",
      p_args: jsonb<Json[]>(),
      p_logs: d(jsonb<LogLine[]>()),
      p_now: d("timestamptz"),
      p_value_text: d("text"),
    },
    returns: returnsJsonb<KvCallResult>(),
  },
  append_run_logs: {
    params: { p_run_id: "uuid", p_token: "bigint", p_logs: jsonb<LogLine[]>() },
    returns: returnsVoid,
  },
  suspend_run: {
    params: {
      p_run_id: "uuid",
      p_token: "bigint",
      p_snapshot: "bytea",
      p_format: "int",
      p_wasm_sha256: "text",
      p_memory_bytes: "bigint",
      p_last_call_id: "int",
      p_wake_at: "timestamptz",
      p_waiting_on: jsonb<WaitingOn>(),
      p_logs: d(jsonb<LogLine[]>()),
      p_now: d("timestamptz"),
    },
    returns: returnsJsonb<RunView>(),
  },
  complete_run: {
    params: {
      p_run_id: "uuid",
      p_token: "bigint",
      p_result: "jsonb",
      p_logs: d(jsonb<LogLine[]>()),
      p_now: d("timestamptz"),
      p_result_text: d("text"),
    },
    returns: returnsJsonb<RunView>(),
  },
  fail_run: {
    params: {
      p_run_id: "uuid",
      p_token: "bigint",
      p_error: jsonb<RunError>(),
      p_logs: d(jsonb<LogLine[]>()),
      p_now: d("timestamptz"),
    },
    returns: returnsJsonb<RunView>(),
  },
  cancel_run: {
    params: {
      p_run_id: "uuid",
      p_reason: d("text"),
      p_owner_id: d("uuid"),
      p_now: d("timestamptz"),
    },
    returns: returnsJsonb<RunView>(),
  },
  requeue_expired_leases: {
    params: { p_now: d("timestamptz"), p_max_expirations: d("int") },
    returns: returnsInt,
  },
  get_run: {
    params: { p_run_id: "uuid", p_owner_id: d("uuid"), p_log_limit: d("int") },
    returns: returnsJsonb<RunView | null>(),
  },
  list_calls: { params: { p_run_id: "uuid" }, returns: returnsJsonb<CallRecord[]>() },
  get_snapshot: {
    params: { p_run_id: "uuid" },
    returns: returnsRows<{ snapshot: SnapshotInfo; bytes: Uint8Array }>({
      snapshot: "jsonb",
      bytes: "bytea",
    }),
  },
  find_stuck_runs: { params: { p_now: d("timestamptz") }, returns: returnsJsonb<StuckRun[]>() },
  dispatch_health: {
    params: { p_now: d("timestamptz"), p_after_seconds: d("int") },
    returns: returnsJsonb<DispatchHealth>(),
  },
  dispatch: { params: { p_run_id: "uuid" }, returns: returnsVoid },
  tick: {
    params: { p_now: d("timestamptz") },
    returns: returnsJsonb<{ requeued: number; woken: number; expired: number }>(),
  },
  next_wake_at: {
    params: { p_now: d("timestamptz") },
    returns: returnsJsonb<{ wakeAt: string | null }>(),
  },
  kv_get: { params: { p_key: "text" }, returns: returnsJsonb<KvEntry>() },
  kv_set: {
    params: { p_key: "text", p_value: "jsonb", p_secret: d("boolean"), p_value_text: d("text") },
    returns: returnsVoid,
  },
  kv_delete: { params: { p_key: "text" }, returns: returnsBoolean },
  get_service: { params: { p_name: "text" }, returns: returnsJsonb<ServiceRow | null>() },
  repair_run: {
    params: { p_run_id: "uuid", p_now: d("timestamptz") },
    returns: returnsJsonb<RepairResult>(),
  },
  list_snapshots: { params: { p_limit: d("int") }, returns: returnsJsonb<SnapshotList>() },
} as const satisfies Record<string, { params: Record<string, Param>; returns: Result }>;

export type Operation = keyof typeof OPERATIONS;

type ParamValue<P> = P extends Defaulted<infer Q> ? ParamValue<Q>
  : P extends SqlType ? SqlValues[P]
  : P extends JsonbParam<infer T> ? T
  : never;

type Params<Op extends Operation> = typeof OPERATIONS[Op]["params"];
type DefaultedKeys<Op extends Operation> = {
  [K in keyof Params<Op>]: Params<Op>[K] extends Defaulted<SqlType | JsonbParam<unknown>> ? K
    : never;
}[keyof Params<Op>];

/**
 * The arguments of an operation by parameter name: those without a default in SQL must be
 * given, the others may be left out (the default applies); any may be null (SQL null).
 */
export type OperationArgs<Op extends Operation> =
  & {
    -readonly [K in Exclude<keyof Params<Op>, DefaultedKeys<Op>>]:
      | ParamValue<Params<Op>[K]>
      | null;
  }
  & {
    -readonly [K in DefaultedKeys<Op>]?: ParamValue<Params<Op>[K]> | null;
  };

/** What an operation returns, decoded (jsonb as JSON, bytea as Uint8Array, void as undefined). */
export type OperationResult<Op extends Operation> = typeof OPERATIONS[Op]["returns"] extends
  Typed<Result, infer T> ? T : never;

/** The schema every operation lives in. */
export const SCHEMA = "quickjs";

function declaration(op: Operation): { params: Record<string, Param>; returns: Result } {
  return OPERATIONS[op];
}

/**
 * The SQL for a call with the arguments given (others take the function's defaults):
 * `select quickjs.fn(p_a => $1::type, …) as result` for a scalar, `select * from
 * quickjs.fn(…)` for rows. `encode` turns each value into what the driver sends: the
 * drivers disagree on jsonb (postgres.js serializes by the described type, PGlite wants
 * JSON text), so each passes its own.
 */
export function sqlCall<Op extends Operation>(
  op: Op,
  args: OperationArgs<Op>,
  encode: (type: SqlType, value: unknown) => unknown,
): { text: string; params: unknown[] } {
  const { params: signature, returns } = declaration(op);
  const named: string[] = [];
  const params: unknown[] = [];
  for (const [name, value] of Object.entries(args)) {
    const param = signature[name];
    if (!param) throw new Error(`${op} has no parameter ${name}`);
    if (value === undefined) continue;
    const type = paramType(param);
    params.push(
      value === null ? null : encode(type, value instanceof Date ? value.toISOString() : value),
    );
    const n = `$${params.length}`;
    named.push(
      type === "text[]"
        ? `${name} => case when ${n}::jsonb is null then null::text[] else array(select jsonb_array_elements_text(${n}::jsonb)) end`
        : `${name} => ${n}::${type}`,
    );
  }
  const call = `${SCHEMA}.${op}(${named.join(", ")})`;
  return {
    text: returns.kind === "rows" ? `select * from ${call}` : `select ${call} as result`,
    params,
  };
}

/**
 * A driver's rows for `op` as the operation's result: the one column of a scalar (void as
 * undefined), or the rows with bytea columns turned into Uint8Array by `bytes` (each
 * driver has its own representation: Buffer, Uint8Array, "\x…" hex text).
 */
export function sqlResult<Op extends Operation>(
  op: Op,
  rows: Record<string, unknown>[],
  bytes: (value: unknown) => Uint8Array,
): OperationResult<Op> {
  const { returns } = declaration(op);
  if (returns.kind === "scalar") {
    const value = rows[0]?.result ?? null;
    return (returns.sql === "void" ? undefined : value) as OperationResult<Op>;
  }
  return rows.map((row) => {
    const decoded: Record<string, unknown> = {};
    for (const [column, type] of Object.entries(returns.columns)) {
      const value = row[column] ?? null;
      decoded[column] = type === "bytea" && value !== null ? bytes(value) : value;
    }
    return decoded;
  }) as OperationResult<Op>;
}

/** The JSON body PostgREST expects for /rpc/<op>: bytea as "\x…" hex text, dates as ISO text. */
export function rpcBody<Op extends Operation>(
  op: Op,
  args: OperationArgs<Op>,
): Record<string, unknown> {
  const { params: signature } = declaration(op);
  const body: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(args)) {
    if (!signature[name]) throw new Error(`${op} has no parameter ${name}`);
    if (value === undefined) continue;
    body[name] = value instanceof Date
      ? value.toISOString()
      : value instanceof Uint8Array
      ? byteaHex(value)
      : value;
  }
  return body;
}

/** bytea's text form, as PostgREST reads and writes it in JSON: "\x" and two hex digits a byte. */
export function byteaHex(bytes: Uint8Array): string {
  return `\\x${Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex")}`;
}

/** The bytes of bytea's hex text form. */
export function byteaFromHex(text: string): Uint8Array {
  if (!/^\\x([0-9a-f]{2})*$/i.test(text)) throw new Error("not bytea hex text");
  return asUint8Array(Buffer.from(text.slice(2), "hex"));
}

/** A Uint8Array over the same memory (a Buffer's prototype differs, and deep equality sees it). */
export function asUint8Array(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
