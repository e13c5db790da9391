/**
 * A local HTTP service for the reliability tests, registered in quickjs.services: it records
 * every request (arrival time, run, seq, attempt, idempotency keys, method, args) and answers
 * deterministically, so a test can compare what really reached the outside world with what
 * the journal says.
 */
import type { TestDb } from "./db.ts";

export interface Received {
  /** Date.now() when the request arrived (the workers' clocks are the same machine's). */
  at: number;
  runId: string;
  seq: number;
  attempt: number;
  /** The body's idempotencyKey and the Idempotency-Key header. */
  bodyKey: string;
  headerKey: string | null;
  method: string;
  args: unknown[];
}

export interface RecordingService {
  url: string;
  received: Received[];
  close(): Promise<void>;
}

/** step(x, i): the answer the service gives, and the test recomputes. */
export function stepAnswer(x: number, i: number): number {
  return (x * 31 + i * 17) % 1009;
}

/** What steps.js returns for an input: the service's answers folded as the task folds them. */
export function expectedTotal(input: { x: number; steps: number }) {
  let total = 0;
  for (let i = 0; i < input.steps; i++) total = (total * 7 + stepAnswer(input.x, i)) % 1000003;
  return { x: input.x, total };
}

/**
 * Answers `step(x, i)` with stepAnswer after `delayMs()` (a little latency, so kills land in
 * the middle of calls); `onRequest` may take over a request (return a Response) or act on it.
 */
export function recordingService(options: {
  delayMs?: () => number;
  onRequest?: (r: Received) => Promise<Response | void> | Response | void;
} = {}): RecordingService {
  const received: Received[] = [];
  const closing = new AbortController();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    signal: closing.signal,
    onListen: () => {},
  }, async (request) => {
    const at = Date.now();
    const body = await request.json() as Record<string, unknown>;
    const r: Received = {
      at,
      runId: String(body.runId),
      seq: Number(body.seq),
      attempt: Number(body.attempt),
      bodyKey: String(body.idempotencyKey),
      headerKey: request.headers.get("idempotency-key"),
      method: String(body.method),
      args: (body.args ?? []) as unknown[],
    };
    received.push(r);
    const own = await options.onRequest?.(r);
    if (own) return own;
    const ms = options.delayMs?.() ?? 0;
    if (ms > 0) await new Promise((resolve) => setTimeout(resolve, ms));
    if (r.method === "step") {
      const [x, i] = r.args as [number, number];
      return Response.json({ result: stepAnswer(x, i) });
    }
    if (r.method === "echo") return Response.json({ result: r.args[0] ?? null });
    return Response.json({ error: { code: "NO_METHOD", message: `no method ${r.method}` } }, {
      status: 404,
    });
  });
  const { port } = server.addr as Deno.NetAddr;
  return {
    url: `http://127.0.0.1:${port}/rpc`,
    received,
    async close() {
      closing.abort();
      await server.finished.catch(() => {});
    },
  };
}

/** Registers `url` as service `name` in quickjs.services. */
export async function registerService(
  db: TestDb,
  name: string,
  url: string,
  timeoutMs = 10_000,
): Promise<void> {
  await db.query(
    `insert into quickjs.services (name, url, timeout_ms) values ($1, $2, $3)
     on conflict (name) do update set url = excluded.url, timeout_ms = excluded.timeout_ms`,
    [name, url, timeoutMs],
  );
}
