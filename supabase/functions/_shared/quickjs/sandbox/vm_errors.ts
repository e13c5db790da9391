/**
 * Turning what a VM throws (an error the prelude described, or a value dumped from
 * QuickJS) into a run's error: a stable code, name, message, stack and cause chain.
 */
import { limitErrorCode } from "./limits.ts";
import type { RunError } from "./errors.ts";

/** An error as the prelude describes it in its status. */
export interface VmErrorDescription {
  code?: string;
  name: string;
  message: string;
  stack?: string;
  cause?: VmErrorDescription;
}

/** Causes deeper than this are dropped: a cycle of causes must not loop. */
const MAX_CAUSE_DEPTH = 8;

/** A run's error from the prelude's description: a limit's code, the error's own, or TASK_ERROR. */
export function toRunError(e: VmErrorDescription | undefined, depth = 0): RunError {
  if (!e) return { code: "TASK_ERROR", name: "Error", message: "the task failed" };
  const code = limitErrorCode(e.name, e.message) ?? e.code ?? "TASK_ERROR";
  const out: RunError = { code, name: e.name, message: e.message };
  if (e.stack) out.stack = e.stack;
  if (e.cause && depth < MAX_CAUSE_DEPTH) out.cause = toRunError(e.cause, depth + 1);
  return out;
}

/** An error thrown while the task's code loads: a syntax error names line and column. */
export function loadError(dumped: unknown): RunError {
  const e = asErrorLike(dumped);
  const name = e.name ?? "Error";
  const message = e.message ?? String(dumped);
  if (name === "SyntaxError") {
    const at = /:(\d+):(\d+)/.exec(e.stack ?? "");
    const where = at ? ` at line ${at[1]}, column ${at[2]}` : "";
    return { code: "TASK_SYNTAX", name, message: `${message}${where}`, stack: e.stack ?? "" };
  }
  return toRunError({ name, message, ...(e.stack ? { stack: e.stack } : {}) });
}

/** An error a job or an internals call threw, dumped from the VM. */
export function jobError(dumped: unknown): RunError {
  const e = asErrorLike(dumped);
  return toRunError({
    name: e.name ?? "Error",
    message: e.message ?? String(dumped),
    ...(e.stack ? { stack: e.stack } : {}),
  });
}

/** A syntax error that an `export` or `import` caused: the code is an ES module after all. */
export function isModuleSyntaxError(dumped: unknown): boolean {
  const e = dumped as { name?: string; message?: string } | null;
  return e?.name === "SyntaxError" && /\b(export|import)\b/.test(e.message ?? "");
}

/** emscripten's abort() (a failed QuickJS assertion), as thrown to the host. */
export function isAbort(e: unknown): boolean {
  return e instanceof Error && /^Aborted\(/.test(e.message);
}

function asErrorLike(dumped: unknown): { name?: string; message?: string; stack?: string } {
  return (typeof dumped === "object" && dumped !== null ? dumped : {}) as {
    name?: string;
    message?: string;
    stack?: string;
  };
}
