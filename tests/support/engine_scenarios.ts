/**
 * Helpers for engine scenarios beyond engine_harness.ts: crash an invocation at a chosen
 * call (the `abort` signal), move the clock past its lease, start a task with allowed tools,
 * read a run's logs by level, and serve HTTP locally for services and tools.http.fetch.
 */
import assert from "node:assert/strict";
import type { Harness } from "./engine_harness.ts";
import type {
  CallRecord,
  InvocationResult,
  Json,
  RunView,
} from "../../supabase/functions/_shared/quickjs/mod.ts";

/** A promise with its resolve function outside. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** What a tool returns when the process "dies" during it: a promise that never settles. */
export function never(): Promise<never> {
  return new Promise<never>(() => {});
}

/** Resolves after `ms`, or early when `signal` aborts (so a server or tool can be closed). */
export function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}

let counter = 0;

/** A task name no other test uses. */
export function taskName(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${++counter}`;
}

/** Publishes `code` (with allowed tools and limits if given) and enqueues a run of it. */
export async function startWith(
  h: Harness,
  code: string,
  input: Json = null,
  options: { name?: string; allowedTools?: string[]; limits?: Record<string, number> } = {},
): Promise<string> {
  const name = options.name ?? taskName("t");
  await h.store.publishTask({
    name,
    code,
    allowedTools: options.allowedTools ?? null,
    limits: options.limits,
  });
  return (await h.store.enqueueRun({ task: name, input, now: h.clock.now() })).id;
}

/** Runs one invocation of `runId` and returns its result (the run must be due). */
export async function invokeOnce(
  h: Harness,
  runId: string,
  signals: { abort?: AbortSignal; yield?: AbortSignal } = {},
): Promise<InvocationResult> {
  const results = await h.engine.claimAndRun({ runId, ...signals });
  assert.equal(results.length, 1, `run ${runId} was not due at ${h.clock.now().toISOString()}`);
  h.invocations.push(results[0]!);
  return results[0]!;
}

/**
 * Runs one invocation that "dies" when `crash` aborts (the process is gone: nothing is
 * written), then moves the clock past the lease so the run can be claimed again.
 */
export async function invokeAndCrash(
  h: Harness,
  runId: string,
  crash: AbortController,
): Promise<void> {
  const result = await invokeOnce(h, runId, { abort: crash.signal });
  assert.equal(result.status, "lost", "the invocation should have died");
  const run = (await h.store.getRun(runId))!;
  assert.equal(run.status, "running", "a dead worker leaves its run running until the lease ends");
  h.clock.jumpTo(new Date(h.clock.now().getTime() + (h.engine.leaseSeconds + 1) * 1000));
}

/** The messages a run logged at one level ("system": the executor's own notes). */
export function logsOf(run: RunView, level: string): string[] {
  return (run.logs ?? []).filter((l) => l.level === level).map((l) => l.message);
}

/** One journal entry of a run. */
export async function callOf(h: Harness, runId: string, seq: number): Promise<CallRecord> {
  const call = (await h.store.listCalls(runId)).find((c) => c.seq === seq);
  assert.ok(call, `run ${runId} has no call ${seq}`);
  return call;
}

/** A local HTTP server on a free port; `url` ends without a slash. */
export interface LocalServer {
  url: string;
  close(): Promise<void>;
}

/**
 * Serves `handler` on 127.0.0.1. `closing` aborts when the server closes, so a handler that
 * stalls on purpose (pause(ms, closing)) does not hold up the shutdown.
 */
export function serve(
  handler: (request: Request, closing: AbortSignal) => Response | Promise<Response>,
): LocalServer {
  const closing = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (request) => handler(request, closing.signal),
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    close: () => {
      closing.abort();
      return server.shutdown();
    },
  };
}

/** A JSON response. */
export function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}
