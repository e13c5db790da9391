/**
 * Errors of the tools: a ToolError rejects the task's await with an Error whose name,
 * message and code (one of ../errors.ts) the task can read, with optional data.
 */
import { type ErrorCode, QuickJsError } from "../errors.ts";
import type { Json } from "../sandbox/vm.ts";

export class ToolError extends QuickJsError {
  override name = "ToolError";
  constructor(code: ErrorCode, message: string, readonly data?: Json) {
    super(code, message);
  }
}

/**
 * A registered service's error answer: its code is the service's own (any UPPER_SNAKE
 * word), handed to the task as it is; our codes stay in ../errors.ts.
 */
export class ServiceError extends Error {
  override name = "ToolError";
  constructor(readonly code: string, message: string, readonly status: number) {
    super(message);
  }

  get data(): Json {
    return { status: this.status };
  }
}

/** What a failed call delivers into the VM and stores in the journal. */
export interface CallError {
  code: string;
  name: string;
  message: string;
  data?: Json;
}

export function toCallError(e: unknown): CallError {
  if (e instanceof ToolError || e instanceof ServiceError) {
    return {
      code: e.code,
      name: e.name,
      message: e.message,
      ...(e.data !== undefined ? { data: e.data } : {}),
    };
  }
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    return {
      code: typeof code === "string" && /^[A-Z][A-Z0-9_]*$/.test(code) ? code : "TOOL_FAILED",
      name: e.name || "Error",
      message: e.message,
    };
  }
  return { code: "TOOL_FAILED", name: "Error", message: String(e) };
}
