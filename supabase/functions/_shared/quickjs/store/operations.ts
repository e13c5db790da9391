/**
 * The SQL functions the store calls, with their parameter types: the one list of database
 * operations. postgres.js and PGlite turn a call into `select quickjs.fn(p_a => $1::type, …)`;
 * supabase-js sends the same named arguments to PostgREST's /rpc/fn.
 */

export type SqlType =
  | "text"
  | "uuid"
  | "jsonb"
  | "int"
  | "bigint"
  | "boolean"
  | "timestamptz"
  | "text[]";

export const OPERATIONS = {
  publish_task: {
    p_name: "text",
    p_code: "text",
    p_description: "text",
    p_limits: "jsonb",
    p_allowed_tools: "text[]",
  },
  enqueue_run: {
    p_task: "text",
    p_task_id: "uuid",
    p_input: "jsonb",
    p_idempotency_key: "text",
    p_owner_id: "uuid",
    p_run_at: "timestamptz",
    p_now: "timestamptz",
  },
  claim_runs: {
    p_worker: "text",
    p_limit: "int",
    p_lease_seconds: "int",
    p_run_id: "uuid",
    p_now: "timestamptz",
  },
  heartbeat: { p_run_id: "uuid", p_token: "bigint", p_lease_seconds: "int", p_now: "timestamptz" },
  record_call: {
    p_run_id: "uuid",
    p_token: "bigint",
    p_seq: "int",
    p_service: "text",
    p_method_path: "text[]",
    p_args: "jsonb",
    p_mode: "text",
    p_wake_at: "timestamptz",
    p_now: "timestamptz",
  },
  start_child: {
    p_run_id: "uuid",
    p_token: "bigint",
    p_seq: "int",
    p_task: "text",
    p_input: "jsonb",
    p_max_depth: "int",
    p_now: "timestamptz",
  },
  settle_call: {
    p_run_id: "uuid",
    p_token: "bigint",
    p_seq: "int",
    p_ok: "boolean",
    p_result: "jsonb",
    p_error: "jsonb",
    p_logs: "jsonb",
    p_now: "timestamptz",
  },
  append_run_logs: { p_run_id: "uuid", p_token: "bigint", p_logs: "jsonb" },
  suspend_run: {
    p_run_id: "uuid",
    p_token: "bigint",
    p_snapshot: "text",
    p_header: "jsonb",
    p_wake_at: "timestamptz",
    p_waiting_on: "jsonb",
    p_logs: "jsonb",
    p_now: "timestamptz",
  },
  complete_run: {
    p_run_id: "uuid",
    p_token: "bigint",
    p_result: "jsonb",
    p_logs: "jsonb",
    p_now: "timestamptz",
  },
  fail_run: {
    p_run_id: "uuid",
    p_token: "bigint",
    p_error: "jsonb",
    p_logs: "jsonb",
    p_now: "timestamptz",
  },
  cancel_run: { p_run_id: "uuid", p_reason: "text", p_owner_id: "uuid", p_now: "timestamptz" },
  requeue_expired_leases: { p_now: "timestamptz", p_max_expirations: "int" },
  get_run: { p_run_id: "uuid", p_owner_id: "uuid", p_log_limit: "int" },
  list_calls: { p_run_id: "uuid" },
  get_snapshot: { p_run_id: "uuid" },
  find_stuck_runs: { p_now: "timestamptz" },
  tick: { p_now: "timestamptz" },
  next_wake_at: { p_now: "timestamptz" },
  kv_get: { p_key: "text" },
  kv_set: { p_key: "text", p_value: "jsonb", p_secret: "boolean" },
  kv_delete: { p_key: "text" },
  get_service: { p_name: "text" },
  repair_run: { p_run_id: "uuid", p_now: "timestamptz" },
  list_snapshots: { p_limit: "int" },
} as const satisfies Record<string, Record<string, SqlType>>;

export type Operation = keyof typeof OPERATIONS;
export type OperationArgs<Op extends Operation> = {
  [K in keyof typeof OPERATIONS[Op]]?: unknown;
};

/** The schema every operation lives in. */
export const SCHEMA = "quickjs";

/**
 * `select quickjs.fn(p_a => $1::type, …) as result` with the arguments given (others take
 * the function's defaults). `encode` turns each value into what the driver sends: the
 * drivers disagree on jsonb (postgres.js serializes by the described type, PGlite wants
 * JSON text), so each passes its own.
 */
export function sqlCall<Op extends Operation>(
  op: Op,
  args: OperationArgs<Op>,
  encode: (type: SqlType, value: unknown) => unknown,
): { text: string; params: unknown[] } {
  const signature = OPERATIONS[op] as Record<string, SqlType>;
  const named: string[] = [];
  const params: unknown[] = [];
  for (const [name, value] of Object.entries(args)) {
    const type = signature[name];
    if (!type) throw new Error(`${op} has no parameter ${name}`);
    if (value === undefined) continue;
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
  return { text: `select ${SCHEMA}.${op}(${named.join(", ")}) as result`, params };
}

/** The JSON body PostgREST expects for /rpc/<op>. */
export function rpcBody<Op extends Operation>(
  op: Op,
  args: OperationArgs<Op>,
): Record<string, unknown> {
  const signature = OPERATIONS[op] as Record<string, SqlType>;
  const body: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(args)) {
    if (!signature[name]) throw new Error(`${op} has no parameter ${name}`);
    if (value === undefined) continue;
    body[name] = value instanceof Date ? value.toISOString() : value;
  }
  return body;
}
