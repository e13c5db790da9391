/**
 * What a host call means. The registry turns each call the task makes into a plan the run
 * loop carries out: a sleep, a checkpoint, a child run, a function to invoke (built-in kv
 * and http, in-process tools, or a registered external service), or an immediate failure.
 */
import type { HostCall, Json } from "../sandbox/vm.ts";
import type { Store } from "../store/store.ts";
import { MAX_SLEEP_MS, parseDuration } from "./durations.ts";
import { httpFetch, type HttpToolOptions } from "./http_tool.ts";
import { type CallError, ServiceError, toCallError, ToolError } from "./tool_errors.ts";
import { parseRetryPolicy, type RetryPolicy } from "./retry.ts";

/** What an invoked tool learns about the call. */
export interface ToolCallContext {
  runId: string;
  seq: number;
  /** Same for every attempt of this call: pass it on to make retries safe. */
  idempotencyKey: string;
  attempt: number;
  signal: AbortSignal;
  /** An asynchronous call: what the service completes it with later. */
  completion?: CallCompletion;
}

/**
 * Sent with an asynchronous call: the service acknowledges at once and completes the call
 * later, however long after, with `token` (POST `url` with service auth, or
 * quickjs.complete_call() in SQL), until `deadlineAt`; then the call fails CALL_TIMEOUT.
 * Meanwhile it may send heartbeats with the same token (POST `heartbeatUrl` {token,
 * details}, or quickjs.heartbeat_call()); with `heartbeatTimeoutMs` it must, at least that
 * often, or the call fails HEARTBEAT_TIMEOUT.
 */
export interface CallCompletion {
  token: string;
  /** POST here {token, result} or {token, error: {code, message}}; absent: SQL only. */
  url?: string;
  deadlineAt: string;
  /** POST here {token, details?}; the answer's `proceed` false says the service may stop. */
  heartbeatUrl?: string;
  /** The longest the service may go without a heartbeat; absent: heartbeats are optional. */
  heartbeatTimeoutMs?: number;
  /** A re-sent call: the progress the last heartbeat reported, to continue from. */
  lastHeartbeat?: { at: string; details?: Json };
}

/**
 * An in-process tool: `tools.<name>.<method...>(...args)`. With `journalAfter` set, a call
 * is journaled once, after it ran, with its outcome (quickjs.record_settled_call: one write
 * instead of record_call before and settle_call after), for tools with no effect outside
 * the process or that deduplicate by their idempotency key. What such a tool gives up: a
 * call cut off by a crash left no "started" entry, so it runs again as attempt 1 (with the
 * same key, run id ':' seq, as before), and a call whose outcome the task never awaited
 * before it ended is not in the journal. A settled call still never runs again; tools.kv
 * and child runs are one fenced write each already and are not affected.
 */
export type CustomTool =
  & ((
    method: string[],
    args: Json[],
    context: ToolCallContext,
  ) => Promise<Json | undefined> | Json | undefined)
  & { journalAfter?: boolean };

export type ToolPlan =
  | { kind: "sleep"; wakeAt: Date }
  | { kind: "checkpoint" }
  | { kind: "child"; task: string; input: Json }
  | {
    kind: "invoke";
    /** Longest the call may take; a call that cannot finish in the invocation is deferred. */
    timeoutMs: number;
    /** The result must not be journaled or logged (a secret from kv). */
    secret?: (result: Json | undefined) => boolean;
    /** What the journal stores instead of the arguments (a secret being written). */
    journalArgs?: Json[];
    /**
     * An asynchronous service: `invoke` only hands the call over (`timeoutMs` bounds that);
     * the outcome comes through quickjs.complete_call within `timeoutMs` of completion.
     */
    completion?: { timeoutMs: number };
    /** Journaled once, with its outcome, after it ran (CustomTool.journalAfter). */
    journalAfter?: boolean;
    invoke: (context: ToolCallContext) => Promise<Json | undefined>;
    /** A registered service's retry policy: failed attempts retry durably (run_loop.ts). */
    retry?: RetryPolicy;
  }
  /**
   * tools.kv: carried out by the store in one transaction with its journal entry and the
   * lease's fencing check (quickjs.kv_call). `journalArgs`: what the journal keeps.
   */
  | {
    kind: "kv";
    op: "get" | "set" | "delete";
    key: string;
    value: Json;
    secret: boolean;
    journalArgs: Json[];
  }
  | { kind: "reject"; error: CallError };

export interface ToolsOptions {
  http?: HttpToolOptions;
  /** fetch for registered services (tests pass one that reaches a local server). */
  serviceFetch?: typeof fetch;
  /** In-process tools by service name. */
  custom?: Record<string, CustomTool>;
  /** Default timeout of in-process tools. */
  customTimeoutMs?: number;
  /**
   * Where services complete asynchronous calls: the function's base URL (…/functions/v1/quickjs);
   * a call's URL is <base>/runs/<id>/calls/<seq>/complete. Absent: they complete in SQL.
   */
  completionBaseUrl?: string;
}

/**
 * Where services complete asynchronous calls: QUICKJS_FUNCTION_URL (the function's public
 * URL, …/functions/v1/quickjs), else the one SUPABASE_URL implies; none: SQL only.
 */
export function completionBaseUrlFromEnv(
  env: { get(name: string): string | undefined },
): string | undefined {
  const explicit = env.get("QUICKJS_FUNCTION_URL");
  if (explicit) return explicit;
  const project = env.get("SUPABASE_URL");
  return project ? `${project.replace(/\/+$/, "")}/functions/v1/quickjs` : undefined;
}

/** What the journal holds instead of a secret value. */
export const SECRET_MARKER = Object.freeze({ $secret: true });

/** True for the journal's stand-in for a secret. */
export function isSecretMarker(value: unknown): boolean {
  return typeof value === "object" && value !== null &&
    (value as { $secret?: unknown }).$secret === true;
}

/** Services that are part of the language, not tools: always allowed. */
const ALWAYS_ALLOWED = new Set(["sleep", "checkpoint"]);
const BUILT_INS = ["sleep", "checkpoint", "tasks", "kv", "http"];

export class ToolRegistry {
  #services = new Map<string, { at: number; service: ServiceInfo | null }>();

  constructor(private readonly store: Store, private readonly options: ToolsOptions = {}) {}

  async plan(call: HostCall, allowedTools: string[] | null, now: Date): Promise<ToolPlan> {
    try {
      if (
        allowedTools && !ALWAYS_ALLOWED.has(call.service) && !allowedTools.includes(call.service)
      ) {
        throw new ToolError(
          "TOOL_NOT_ALLOWED",
          `this task may not call tools.${call.service} (allowed: ${
            allowedTools.join(", ") || "none"
          })`,
        );
      }
      return await this.#plan(call, now);
    } catch (e) {
      return { kind: "reject", error: toCallError(e) };
    }
  }

  async #plan(call: HostCall, now: Date): Promise<ToolPlan> {
    const method = call.path.join(".");
    const args = call.args;
    switch (call.service) {
      case "sleep":
        return { kind: "sleep", wakeAt: sleepTarget(call, now) };
      case "checkpoint":
        return { kind: "checkpoint" };
      case "tasks": {
        if (method !== "execute") throw unknownMethod("tasks", method, ["execute"]);
        const [task, input] = args;
        if (typeof task !== "string" || task === "") {
          throw new ToolError(
            "BAD_ARGUMENTS",
            "tasks.execute(name, input): name must be a task name",
          );
        }
        return { kind: "child", task, input: input ?? null };
      }
      case "kv":
        return this.#kv(method, args);
      case "http": {
        if (method !== "fetch") throw unknownMethod("http", method, ["fetch"]);
        const http = this.options.http ?? { allow: [] };
        return {
          kind: "invoke",
          timeoutMs: http.timeoutMs ?? 30_000,
          invoke: (context) => httpFetch(args, http, context.signal),
        };
      }
    }
    const custom = this.options.custom?.[call.service];
    if (custom) {
      return {
        kind: "invoke",
        timeoutMs: this.options.customTimeoutMs ?? 30_000,
        journalAfter: custom.journalAfter === true,
        invoke: async (context) => await custom(call.path, args, context),
      };
    }
    const service = await this.#service(call.service);
    if (!service) {
      throw new ToolError(
        "TOOL_NOT_FOUND",
        `no tool or service named "${call.service}": the built-ins are ${BUILT_INS.join(", ")}; ` +
          "register external services in quickjs.services",
      );
    }
    let retry: RetryPolicy | null;
    try {
      retry = parseRetryPolicy(service.retry);
    } catch (e) {
      throw new ToolError(
        "BAD_RETRY_POLICY",
        `service ${service.name}: ${(e as Error).message} (quickjs.services.retry)`,
      );
    }
    return {
      kind: "invoke",
      timeoutMs: service.timeoutMs,
      ...(service.completion === "async"
        ? { completion: { timeoutMs: service.completionTimeoutMs } }
        : {}),
      invoke: (context) => callService(service, method, args, context, this.options.serviceFetch),
      ...(retry && retry.attempts > 1 ? { retry } : {}),
    };
  }

  /**
   * Where a service completes call `seq` of run `runId` (`…/complete`) or sends its
   * heartbeats (`…/heartbeat`), when the engine knows its base URL.
   */
  completionUrl(
    runId: string,
    seq: number,
    action: "complete" | "heartbeat" = "complete",
  ): string | undefined {
    const base = this.options.completionBaseUrl?.replace(/\/+$/, "");
    return base ? `${base}/runs/${runId}/calls/${seq}/${action}` : undefined;
  }

  #kv(method: string, args: Json[]): ToolPlan {
    const key = args[0];
    if (typeof key !== "string" || key === "") {
      throw new ToolError(
        "BAD_ARGUMENTS",
        `kv.${method}(key, ...): key must be a non-empty string`,
      );
    }
    switch (method) {
      case "get":
      case "delete":
        return { kind: "kv", op: method, key, value: null, secret: false, journalArgs: args };
      case "set": {
        const options = (args[2] ?? {}) as { secret?: unknown };
        const secret = options.secret === true;
        return {
          kind: "kv",
          op: "set",
          key,
          value: args[1] ?? null,
          secret,
          // a secret's value never reaches the journal
          journalArgs: secret ? [key, SECRET_MARKER, args[2] ?? null] : args,
        };
      }
      default:
        throw unknownMethod("kv", method, ["get", "set", "delete"]);
    }
  }

  async #service(name: string): Promise<ServiceInfo | null> {
    // Registered services change rarely; look each up at most once a minute.
    const cached = this.#services.get(name);
    if (cached && performance.now() - cached.at < 60_000) return cached.service;
    const service = await this.store.getService(name);
    this.#services.set(name, { at: performance.now(), service });
    return service;
  }
}

interface ServiceInfo {
  name: string;
  url: string;
  headers: Record<string, string>;
  timeoutMs: number;
  completion?: "inline" | "async";
  completionTimeoutMs: number;
  retry?: Record<string, Json>;
}

function sleepTarget(call: HostCall, now: Date): Date {
  if (call.path.length === 0) {
    try {
      return new Date(now.getTime() + parseDuration(call.args[0]));
    } catch (e) {
      throw new ToolError("BAD_ARGUMENTS", `sleep: ${(e as Error).message}`);
    }
  }
  if (call.path.length === 1 && call.path[0] === "until") {
    const at = new Date(String(call.args[0]));
    if (Number.isNaN(at.getTime())) throw new ToolError("BAD_ARGUMENTS", "sleepUntil: not a date");
    if (at.getTime() - now.getTime() > MAX_SLEEP_MS) {
      throw new ToolError("BAD_ARGUMENTS", "sleepUntil: a sleep may last ten years at most");
    }
    return at;
  }
  throw unknownMethod("sleep", call.path.join("."), ["(duration)", "until"]);
}

function unknownMethod(service: string, method: string, known: string[]): ToolError {
  return new ToolError(
    "TOOL_NOT_FOUND",
    `tools.${service} has no method "${method}" (it has ${known.join(", ")})`,
  );
}

/**
 * A registered service: POST <url> with {method, args, runId, seq, attempt} and an
 * Idempotency-Key header. A 2xx reply's JSON (its `result` if it has one) is the value; any
 * other reply fails the call with the body's {error: {code, message}} if it has one. An
 * asynchronous call also carries `completion` (CallCompletion); its 2xx reply only
 * acknowledges it.
 */
async function callService(
  service: ServiceInfo,
  method: string,
  args: Json[],
  context: ToolCallContext,
  fetchImpl: typeof fetch = fetch,
): Promise<Json> {
  const timeout = AbortSignal.timeout(service.timeoutMs);
  let response: Response;
  try {
    response = await fetchImpl(service.url, {
      method: "POST",
      headers: {
        ...service.headers,
        "content-type": "application/json",
        "idempotency-key": context.idempotencyKey,
        "x-quickjs-run-id": context.runId,
        "x-quickjs-call-seq": String(context.seq),
      },
      body: JSON.stringify({
        method,
        args,
        runId: context.runId,
        seq: context.seq,
        attempt: context.attempt,
        idempotencyKey: context.idempotencyKey,
        ...(context.completion ? { completion: context.completion } : {}),
      }),
      signal: AbortSignal.any([context.signal, timeout]),
    });
  } catch (e) {
    if (timeout.aborted) {
      throw new ToolError(
        "SERVICE_TIMEOUT",
        `${service.name}.${method}: no reply within ${service.timeoutMs} ms`,
      );
    }
    throw new ToolError("SERVICE_ERROR", `${service.name}.${method}: ${(e as Error).message}`);
  }
  let text: string;
  try {
    text = await response.text();
  } catch (e) {
    // headers came in time but the body stalled: the same timeout, not an AbortError
    if (timeout.aborted) {
      throw new ToolError(
        "SERVICE_TIMEOUT",
        `${service.name}.${method}: the reply's body did not arrive within ${service.timeoutMs} ms`,
      );
    }
    throw new ToolError("SERVICE_ERROR", `${service.name}.${method}: ${(e as Error).message}`);
  }
  let body: unknown = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = text;
  }
  if (!response.ok) {
    const error = (body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
    const message = typeof error?.message === "string"
      ? error.message
      : `${service.name}.${method}: HTTP ${response.status}`;
    // the service's own code is the service's vocabulary, not ours: relayed as it is
    if (typeof error?.code === "string") {
      throw new ServiceError(error.code, message, response.status);
    }
    throw new ToolError("SERVICE_ERROR", message, { status: response.status });
  }
  if (body && typeof body === "object" && !Array.isArray(body) && "result" in body) {
    return (body as { result: Json }).result;
  }
  return body as Json;
}
