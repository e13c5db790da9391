/** Reads a JSON request body under a size limit that also holds for chunked bodies. */
import { HttpError } from "./errors.ts";
import { readCapped } from "../../_shared/quickjs/mod.ts";

/** The parsed body, or undefined when there is none (empty or only whitespace). */
export async function readJsonBody(request: Request, maxBytes: number): Promise<unknown> {
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > maxBytes) throw tooLarge(maxBytes);
  if (!request.body) return undefined;
  // Content-Length is absent for chunked bodies (and may lie): count while reading
  const bytes = await readCapped(request.body, maxBytes, () => tooLarge(maxBytes));
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new HttpError(400, "BAD_JSON", "the request body is not UTF-8 text");
  }
  if (text.trim() === "") return undefined;
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, "BAD_JSON", `the request body is not JSON: ${(e as Error).message}`);
  }
}

function tooLarge(maxBytes: number): HttpError {
  return new HttpError(
    413,
    "PAYLOAD_TOO_LARGE",
    `the request body is larger than ${maxBytes} bytes`,
  );
}
