/**
 * Every error code a user can meet, in one closed list: what a run fails with, what a host
 * call rejects with inside a task, what the store and the API answer. The sandbox, the
 * tools, the store and the HTTP layer raise only these, through QuickJsError; the SQL
 * raises the ones marked `sql` (tests/errors_test.ts checks both directions, and that
 * README's list is this one).
 */

/**
 * `where`: a run's error, a host call's rejection inside the task, the store, the HTTP API.
 * `status`: the HTTP answer when the code reaches a client. `sql`: raised by the migrations.
 */
export interface ErrorInfo {
  where: "run" | "call" | "store" | "http";
  status: number;
  sql?: true;
  about: string;
}

export const ERROR_CODES = Object.freeze(
  {
    // ---- a run's error: the task and its sandbox ---------------------------------------------
    TASK_SYNTAX: {
      where: "run",
      status: 422,
      about: "the task code does not parse (line and column in the message)",
    },
    TASK_INVALID: {
      where: "run",
      status: 422,
      about: "the task's definition cannot run (limits out of range)",
    },
    TASK_NO_ENTRY: {
      where: "run",
      status: 422,
      about: "no default-exported function (or module.exports)",
    },
    TASK_ERROR: {
      where: "run",
      status: 422,
      about: "the task threw and nothing caught it (a host error's own code is kept)",
    },
    TASK_DEADLOCK: {
      where: "run",
      status: 422,
      about: "the task awaits a promise nothing can settle",
    },
    UNHANDLED_REJECTION: {
      where: "run",
      status: 422,
      about: "a host call's rejection that the task never handled",
    },
    SANDBOX_TIMEOUT: {
      where: "run",
      status: 422,
      about: "one synchronous stretch ran past sliceMs",
    },
    SANDBOX_MEMORY: { where: "run", status: 422, about: "the task ran out of memoryBytes" },
    SANDBOX_STACK: { where: "run", status: 422, about: "the task recursed past stackBytes" },
    SANDBOX_CRASH: {
      where: "run",
      status: 500,
      about: "the wasm module trapped; the VM was unusable",
    },
    RESULT_NOT_SERIALIZABLE: { where: "run", status: 422, about: "the result is not JSON" },
    RESULT_TOO_LARGE: {
      where: "run",
      status: 422,
      about: "the JSON result is larger than resultBytes",
    },
    LOG_TOO_LARGE: { where: "run", status: 422, about: "the task logged more than logBytes" },
    TOO_MANY_PENDING_CALLS: {
      where: "run",
      status: 422,
      about: "more host calls pending at once than pendingCalls",
    },
    INPUT_NOT_SERIALIZABLE: {
      where: "run",
      status: 422,
      about: "the input could not be given to the task as JSON",
    },
    SNAPSHOT_INCOMPATIBLE: {
      where: "run",
      status: 500,
      about: "the snapshot was made by another build or set-up",
    },
    SNAPSHOT_CORRUPT: {
      where: "run",
      status: 500,
      about: "the snapshot is damaged, of another run, or under other limits",
    },
    JOURNAL_UNREADABLE: {
      where: "run",
      status: 500,
      about: "a journal entry is sealed with a key the worker's ring lacks",
    },
    VALUE_NOT_STORABLE: {
      where: "run",
      status: 422,
      about: "a string Postgres cannot hold (U+0000, a lone surrogate)",
    },
    RUN_LEASE_EXPIRED: {
      where: "run",
      status: 500,
      sql: true,
      about: "the run's workers died too many times in a row",
    },
    RUN_UNRECOVERABLE: {
      where: "run",
      status: 500,
      sql: true,
      about: "an operator's repair found nothing to continue from",
    },
    CANCELLED: { where: "run", status: 409, sql: true, about: "the run was cancelled" },
    ENGINE_ERROR: {
      where: "run",
      status: 500,
      about: "the engine failed (an invocation's report; the run continues elsewhere)",
    },

    // ---- a host call's rejection inside the task ------------------------------------------
    ARGS_TOO_LARGE: {
      where: "call",
      status: 413,
      about: "a host call's arguments are larger than argsBytes as JSON",
    },
    HOST_BYTES_EXCEEDED: {
      where: "call",
      status: 422,
      about: "calls in one slice would pass more than hostBytes through the host",
    },
    TOOL_NOT_FOUND: { where: "call", status: 404, about: "no tool or service of that name" },
    TOOL_NOT_ALLOWED: {
      where: "call",
      status: 403,
      about: "the task's @tools does not list the service",
    },
    TOOL_FAILED: { where: "call", status: 500, about: "an in-process tool threw without a code" },
    BAD_ARGUMENTS: { where: "call", status: 422, about: "a built-in tool's arguments are wrong" },
    HTTP_FORBIDDEN: {
      where: "call",
      status: 403,
      about: "tools.http.fetch: host not allowed, or a private address",
    },
    HTTP_ERROR: { where: "call", status: 502, about: "tools.http.fetch: the request failed" },
    HTTP_TIMEOUT: { where: "call", status: 504, about: "tools.http.fetch: no answer in time" },
    HTTP_TOO_LARGE: {
      where: "call",
      status: 502,
      about: "tools.http.fetch: the response is larger than allowed",
    },
    HTTP_BAD_JSON: {
      where: "call",
      status: 502,
      about: "tools.http.fetch: `json: true` but the body is not JSON",
    },
    SERVICE_ERROR: {
      where: "call",
      status: 502,
      sql: true,
      about: "a registered service answered an error or could not be reached",
    },
    SERVICE_TIMEOUT: {
      where: "call",
      status: 504,
      about: "a registered service did not answer (or finish its body) in time",
    },
    CALL_TIMEOUT: {
      where: "call",
      status: 504,
      sql: true,
      about: "an asynchronous call got no completion by its deadline (completion_timeout_ms)",
    },
    HEARTBEAT_TIMEOUT: {
      where: "call",
      status: 504,
      sql: true,
      about: "an asynchronous call's service sent no heartbeat in time (heartbeat_timeout_ms)",
    },
    TIMEOUT_OVER_BUDGET: {
      where: "call",
      status: 500,
      about:
        "the call's timeout (quickjs.services.timeout_ms) is longer than an invocation may run",
    },
    BAD_RETRY_POLICY: {
      where: "call",
      status: 500,
      about: "a service's retry policy (quickjs.services.retry) is out of range",
    },
    CHILD_FAILED: {
      where: "call",
      status: 422,
      sql: true,
      about: "the child run failed (its error is in data)",
    },
    CHILD_CANCELLED: {
      where: "call",
      status: 409,
      sql: true,
      about: "the child run was cancelled",
    },
    CHILD_NOT_FOUND: { where: "call", status: 404, sql: true, about: "the child run vanished" },
    CHILD_DEPTH_EXCEEDED: {
      where: "call",
      status: 422,
      sql: true,
      about: "child runs nest deeper than allowed",
    },
    SECRET_TO_CHILD: {
      where: "call",
      status: 422,
      about: "a child run's input holds a secret (pass the kv key instead)",
    },
    SECRET_CALL_INTERRUPTED: {
      where: "call",
      status: 503,
      about: "a call carrying a secret was cut off; its redacted arguments are not sent again",
    },
    CHILD_LIMIT_EXCEEDED: {
      where: "call",
      status: 422,
      sql: true,
      about: "the run started max_children_per_run children already",
    },
    DESCENDANT_LIMIT_EXCEEDED: {
      where: "call",
      status: 422,
      sql: true,
      about: "the top run's tree holds max_descendants_per_root runs already",
    },

    // ---- the store -----------------------------------------------------------------------------
    TASK_NOT_FOUND: { where: "store", status: 404, sql: true, about: "no task of that name or id" },
    RUN_NOT_FOUND: {
      where: "store",
      status: 404,
      sql: true,
      about: "no run of that id (or not the caller's)",
    },
    CALL_NOT_FOUND: {
      where: "store",
      status: 404,
      sql: true,
      about: "no journal entry of that sequence number",
    },
    COMPLETION_REFUSED: {
      where: "store",
      status: 403,
      sql: true,
      about: "not the token the asynchronous call was last sent with",
    },
    IDEMPOTENCY_CONFLICT: {
      where: "store",
      status: 409,
      sql: true,
      about: "the idempotency key was used with another input",
    },
    STALE_LEASE: {
      where: "store",
      status: 409,
      sql: true,
      about: "the worker's lease was taken over: its write is refused",
    },
    NOT_PARKED: {
      where: "store",
      status: 422,
      sql: true,
      about: "a snapshot must list the calls the VM is parked on",
    },
    NOT_WAKEABLE: {
      where: "store",
      status: 422,
      sql: true,
      about: "a run may only suspend with a wake time or a child",
    },
    DATABASE_ERROR: {
      where: "store",
      status: 500,
      about: "the database failed (details in the log)",
    },

    // ---- the HTTP API ------------------------------------------------------------------------
    BAD_JSON: { where: "http", status: 400, about: "the body is not UTF-8 JSON" },
    JSON_TOO_DEEP: {
      where: "http",
      status: 400,
      about: "the body nests arrays and objects past 64 levels",
    },
    BAD_BODY: {
      where: "http",
      status: 400,
      about: "the body broke off or its chunked encoding is wrong",
    },
    BODY_TIMEOUT: { where: "http", status: 408, about: "the body did not arrive in time (15 s)" },
    UNAUTHENTICATED: { where: "http", status: 401, about: "no token or key" },
    INVALID_TOKEN: { where: "http", status: 401, about: "the token or key is not valid" },
    FORBIDDEN: { where: "http", status: 403, about: "the caller may not do this" },
    NOT_FOUND: { where: "http", status: 404, about: "no such route" },
    METHOD_NOT_ALLOWED: {
      where: "http",
      status: 405,
      about: "the route takes other methods (Allow header)",
    },
    NOT_DUE: { where: "http", status: 409, about: "the run is not due (resume)" },
    PAYLOAD_TOO_LARGE: { where: "http", status: 413, about: "the body is larger than 1 MiB" },
    VALIDATION_FAILED: {
      where: "http",
      status: 422,
      about: "the body or path breaks the schema (fields named)",
    },
    NOT_CONFIGURED: {
      where: "http",
      status: 500,
      about: "the function has no database configured",
    },
    WASM_MISSING: {
      where: "http",
      status: 500,
      about: "the deployed function lacks the vendored QuickJS wasm (deno task prepare-deploy)",
    },
    INTERNAL: {
      where: "http",
      status: 500,
      about: "an unexpected error (details in the function's log)",
    },
  } as const satisfies Record<string, ErrorInfo>,
);

export type ErrorCode = keyof typeof ERROR_CODES;

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && Object.hasOwn(ERROR_CODES, value);
}

/**
 * The one error type: a code from the list, a message, and (optionally) a cause. Each layer
 * names its own (SandboxError, ToolError, StoreError, HttpError) so a task or a log can tell
 * where it came from; the code alone says what happened.
 */
export class QuickJsError extends Error {
  override name = "QuickJsError";
  readonly code: ErrorCode;
  readonly #status: number | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    options: { cause?: unknown; status?: number } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.#status = options.status;
  }

  /** The HTTP status of this error when it reaches a client. */
  get status(): number {
    return this.#status ?? ERROR_CODES[this.code].status;
  }
}
