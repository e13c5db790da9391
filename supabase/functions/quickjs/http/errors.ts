/**
 * HTTP errors: the library's one error type with the answer's status and headers, and the
 * one function that turns any error into a JSON response `{ "error": { "code", "message" } }`.
 * Codes and their statuses come from the library's list (_shared/quickjs/errors.ts).
 */
import {
  type ErrorCode,
  isDataError,
  QuickJsError,
  StoreError,
} from "../../_shared/quickjs/mod.ts";

export class HttpError extends QuickJsError {
  override name = "HttpError";
  readonly headers: Headers;

  constructor(
    status: number,
    code: ErrorCode,
    message: string,
    options: { headers?: HeadersInit; cause?: unknown } = {},
  ) {
    super(code, message, { cause: options.cause, status });
    this.headers = new Headers(options.headers);
  }
}

/** The response for any error; the details of unexpected ones go to the log, never out. */
export function errorResponse(e: unknown): Response {
  const error = toHttpError(e);
  const headers = new Headers(error.headers);
  // RFC 6750: a 401 names the scheme the client should use
  if (error.status === 401) headers.set("www-authenticate", "Bearer");
  return Response.json(
    { error: { code: error.code, message: error.message } },
    { status: error.status, headers },
  );
}

function toHttpError(e: unknown): HttpError {
  if (e instanceof HttpError) return e;
  if (e instanceof StoreError && isDataError(e)) {
    // the request held a value Postgres cannot store (U+0000, a lone surrogate, …)
    return new HttpError(422, "VALUE_NOT_STORABLE", `the database refused a value: ${e.message}`, {
      cause: e,
    });
  }
  // the client's fault (a task or run that does not exist, a conflict): its code and status
  if (e instanceof QuickJsError && e.status >= 400 && e.status < 500) {
    return new HttpError(e.status, e.code, e.message, { cause: e });
  }
  console.error("quickjs: internal error while handling a request:", e);
  return new HttpError(500, "INTERNAL", "internal error; the details are in the function's log", {
    cause: e,
  });
}
