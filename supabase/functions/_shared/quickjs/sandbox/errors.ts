/**
 * Errors of the sandbox layer, on the one error type (../errors.ts lists every code), and
 * the shape in which a run's error is stored and returned.
 */
import { type ErrorCode, QuickJsError } from "../errors.ts";

/** A run's error as stored in Postgres and returned over HTTP. */
export interface RunError {
  code: string;
  name: string;
  message: string;
  stack?: string;
  cause?: RunError;
}

/** A sandbox failure raised on the host side (snapshot, setup, limits). */
export class SandboxError extends QuickJsError {
  override name = "SandboxError";
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }

  toRunError(): RunError {
    return { code: this.code, name: this.name, message: this.message };
  }
}
