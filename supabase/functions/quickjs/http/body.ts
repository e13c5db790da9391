/**
 * Reads a JSON request body under a size limit that also holds for chunked bodies, a time
 * limit for bodies that stall, and a nesting limit checked before any recursive code sees it.
 */
import { HttpError } from "./errors.ts";
import { readCapped } from "../../_shared/quickjs/mod.ts";

/**
 * Deepest nesting of arrays and objects a body may have. Real inputs stay far below (a
 * GeoJSON MultiPolygon is 4 deep, the deepest JSON Schema documents ~20); the code after
 * this is recursive (zod, Postgres' jsonb parser, the task's JSON.parse inside QuickJS's
 * small stack), and zod's z.json() overflowed the stack at ~5,000 levels.
 */
export const MAX_JSON_DEPTH = 64;

export interface BodyLimits {
  maxBytes: number;
  /** Longest the whole body may take to arrive, from the first read. */
  timeoutMs: number;
}

/** The parsed body, or undefined when there is none (empty or only whitespace). */
export async function readJsonBody(request: Request, limits: BodyLimits): Promise<unknown> {
  const { maxBytes, timeoutMs } = limits;
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > maxBytes) throw tooLarge(maxBytes);
  if (!request.body) return undefined;
  // Content-Length is absent for chunked bodies (and may lie): count while reading
  const timeout = new AbortController();
  const timer = setTimeout(() => timeout.abort(), timeoutMs);
  let bytes: Uint8Array;
  try {
    bytes = await readCapped(request.body, maxBytes, () => tooLarge(maxBytes), timeout.signal);
  } catch (e) {
    if (e instanceof HttpError) throw e;
    if (timeout.signal.aborted) {
      throw new HttpError(
        408,
        "BODY_TIMEOUT",
        `the request body did not arrive within ${timeoutMs} ms`,
        { cause: e, headers: { connection: "close" } },
      );
    }
    // the client went away mid-body, or sent a broken chunked encoding: its fault, not ours
    throw new HttpError(
      400,
      "BAD_BODY",
      `the request body could not be read: ${(e as Error)?.message ?? e}`,
      { cause: e, headers: { connection: "close" } },
    );
  } finally {
    clearTimeout(timer);
  }
  let text: string;
  try {
    // a UTF-8 byte order mark is dropped (ignoreBOM: false); UTF-16 is not UTF-8 and refused
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new HttpError(400, "BAD_JSON", "the request body is not UTF-8 text");
  }
  if (text.trim() === "") return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, "BAD_JSON", `the request body is not JSON: ${(e as Error).message}`);
  }
  if (jsonDepth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH) {
    throw new HttpError(
      400,
      "JSON_TOO_DEEP",
      `the request body nests arrays and objects more than ${MAX_JSON_DEPTH} levels deep`,
    );
  }
  return value;
}

/**
 * How deeply `value` nests arrays and objects (a scalar is 0, `[]` is 1), counted without
 * recursion so that no input can overflow the stack; it stops as soon as it passes `limit`.
 */
export function jsonDepth(value: unknown, limit = Infinity): number {
  let deepest = 0;
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length) {
    const [item, depth] = stack.pop()!;
    if (item === null || typeof item !== "object") continue;
    if (depth > deepest) deepest = depth;
    if (deepest > limit) return deepest;
    for (const child of Object.values(item)) {
      if (child !== null && typeof child === "object") stack.push([child, depth + 1]);
    }
  }
  return deepest;
}

function tooLarge(maxBytes: number): HttpError {
  return new HttpError(
    413,
    "PAYLOAD_TOO_LARGE",
    `the request body is larger than ${maxBytes} bytes`,
  );
}
