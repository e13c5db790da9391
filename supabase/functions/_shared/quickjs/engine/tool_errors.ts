/**
 * Errors of the engine layer. A ToolError rejects the task's await with an Error whose
 * name, message and code the task can read; EngineError is the engine's own failure.
 */
import type { Json } from "../sandbox/vm.ts";

export class ToolError extends Error {
  override name = "ToolError";
  constructor(readonly code: string, message: string, readonly data?: Json) {
    super(message);
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
  if (e instanceof ToolError) {
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
