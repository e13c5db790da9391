/**
 * Errors of the sandbox layer: stable codes users can search for, and the shape in which
 * a run's error is stored and returned.
 */

/** Every code a run can fail with because of the sandbox or the task's own code. */
export const SANDBOX_ERROR_CODES = Object.freeze({
  /** The task code does not parse; the message has the line and column. */
  TASK_SYNTAX: "TASK_SYNTAX",
  /** The task's definition cannot run (limits out of range, written around the checks). */
  TASK_INVALID: "TASK_INVALID",
  /** The task code loads but has no default-exported function (or module.exports). */
  TASK_NO_ENTRY: "TASK_NO_ENTRY",
  /** The task's code threw (or its promise rejected) and nothing caught it. */
  TASK_ERROR: "TASK_ERROR",
  /** The task awaits a promise nothing can settle: no host call pending, no job queued. */
  TASK_DEADLOCK: "TASK_DEADLOCK",
  /** A host call's promise rejected and the task never handled it. */
  UNHANDLED_REJECTION: "UNHANDLED_REJECTION",
  /** One synchronous stretch of task code ran past its CPU deadline. */
  SANDBOX_TIMEOUT: "SANDBOX_TIMEOUT",
  /** The task ran out of its memory limit. */
  SANDBOX_MEMORY: "SANDBOX_MEMORY",
  /** The task recursed past its stack limit. */
  SANDBOX_STACK: "SANDBOX_STACK",
  /** The wasm module itself trapped; the VM is unusable. */
  SANDBOX_CRASH: "SANDBOX_CRASH",
  /** The result is not JSON (a function, a BigInt, a cycle, ...). */
  RESULT_NOT_SERIALIZABLE: "RESULT_NOT_SERIALIZABLE",
  /** The JSON result is larger than the limit. */
  RESULT_TOO_LARGE: "RESULT_TOO_LARGE",
  /** The task logged more than the limit. */
  LOG_TOO_LARGE: "LOG_TOO_LARGE",
  /** The task had more host calls pending at once than the limit. */
  TOO_MANY_PENDING_CALLS: "TOO_MANY_PENDING_CALLS",
  /** The input could not be turned into JSON. */
  INPUT_NOT_SERIALIZABLE: "INPUT_NOT_SERIALIZABLE",
  /** A snapshot was made by another build or setup and cannot be restored here. */
  SNAPSHOT_INCOMPATIBLE: "SNAPSHOT_INCOMPATIBLE",
  /** A snapshot's bytes are damaged. */
  SNAPSHOT_CORRUPT: "SNAPSHOT_CORRUPT",
});
export type SandboxErrorCode = keyof typeof SANDBOX_ERROR_CODES;

/** A run's error as stored in Postgres and returned over HTTP. */
export interface RunError {
  code: string;
  name: string;
  message: string;
  stack?: string;
  cause?: RunError;
}

/** A sandbox failure raised on the host side (snapshot, setup, limits). */
export class SandboxError extends Error {
  override name = "SandboxError";
  constructor(
    readonly code: SandboxErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  toRunError(): RunError {
    return { code: this.code, name: this.name, message: this.message };
  }
}
