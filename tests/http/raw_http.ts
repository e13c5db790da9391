/**
 * Raw HTTP/1.1 over TCP for the tests that need what fetch will not send: broken chunked
 * encodings, bodies that stall or stop mid-way, odd request lines, huge headers. Also the
 * app served on a local port, and console.error captured, so a test can assert that a
 * client's mistake was not logged as an internal error.
 */
import type { App } from "../../supabase/functions/quickjs/http/setup.ts";

export interface RawResult {
  /** The status of the response, or null when the server sent none (closed, or timed out). */
  status: number | null;
  /** The response as text (head and body), as far as it arrived. */
  text: string;
  /** True when nothing complete arrived within the time allowed. */
  timedOut: boolean;
}

export interface RawOptions {
  /** Pause between the parts written (a slow client). */
  pauseMs?: number;
  /** Close the connection right after the last part, without reading (a client that leaves). */
  leave?: boolean;
  /** Give up reading after this long (default 5 s). */
  timeoutMs?: number;
  /** The response has a head only (the answer to HEAD), whatever its Content-Length says. */
  noBody?: boolean;
}

const encoder = new TextEncoder();

/** Writes `parts` to 127.0.0.1:`port` and reads one response (or notes there was none). */
export async function rawRequest(
  port: number,
  parts: (string | Uint8Array)[],
  options: RawOptions = {},
): Promise<RawResult> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    try {
      conn.close();
    } catch { /* closed already */ }
  };
  try {
    for (const [i, part] of parts.entries()) {
      if (i > 0 && options.pauseMs) await new Promise((r) => setTimeout(r, options.pauseMs));
      try {
        await conn.write(typeof part === "string" ? encoder.encode(part) : part);
      } catch {
        break; // the server closed on us: read what it said
      }
    }
    if (options.leave) {
      close();
      return { status: null, text: "", timedOut: false };
    }
    return await readResponse(conn, options.timeoutMs ?? 5000, close, options.noBody === true);
  } finally {
    close();
  }
}

/** Reads until one whole response (by Content-Length or chunked end), EOF, or the timeout. */
async function readResponse(
  conn: Deno.Conn,
  timeoutMs: number,
  close: () => void,
  noBody: boolean,
): Promise<RawResult> {
  const complete = (text: string) => noBody ? text.includes("\r\n\r\n") : completeResponse(text);
  const decoder = new TextDecoder();
  let text = "";
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    close(); // makes the pending read end
  }, timeoutMs);
  try {
    const buffer = new Uint8Array(64 * 1024);
    for (;;) {
      let n: number | null;
      try {
        n = await conn.read(buffer);
      } catch {
        break; // reset by the server, or closed by the timer
      }
      if (n === null) break;
      text += decoder.decode(buffer.subarray(0, n), { stream: true });
      if (complete(text)) break;
    }
  } finally {
    clearTimeout(timer);
  }
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(text);
  return {
    status: status ? Number(status[1]) : null,
    text,
    timedOut: timedOut && !complete(text),
  };
}

function completeResponse(text: string): boolean {
  const end = text.indexOf("\r\n\r\n");
  if (end < 0) return false;
  const head = text.slice(0, end).toLowerCase();
  const body = text.slice(end + 4);
  const length = /\r\ncontent-length: *(\d+)/.exec(head);
  if (length) return encoder.encode(body).byteLength >= Number(length[1]);
  if (/\r\ntransfer-encoding: *chunked/.test(head)) return body.endsWith("0\r\n\r\n");
  return /^http\/1\.[01] (1\d\d|204|304)/.test(head);
}

export interface Served {
  port: number;
  /** Errors Deno.serve's onError saw: the app let something escape. */
  escaped: unknown[];
  close(): Promise<void>;
}

/** The app on a free local port, as Deno.serve would run it on Supabase. */
export function serveApp(app: App): Served {
  const escaped: unknown[] = [];
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: () => {},
    onError: (e) => {
      escaped.push(e);
      return new Response("escaped", { status: 500 });
    },
  }, app);
  return {
    port: server.addr.port,
    escaped,
    close: () => server.shutdown(),
  };
}

/** console.error calls while `capture` is on, instead of printing them. */
export function captureErrors(): { logged: unknown[][]; restore(): void } {
  const logged: unknown[][] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => void logged.push(args);
  return {
    logged,
    restore: () => void (console.error = original),
  };
}

/** The log lines that report an internal error of the app. */
export function internalErrors(logged: unknown[][]): string[] {
  return logged.map((args) => args.map(String).join(" ")).filter((line) =>
    /internal error|background execution failed/.test(line)
  );
}
