/**
 * A registered service that sends its headers and then stalls mid-body: the call ends at
 * the service's timeout_ms with SERVICE_TIMEOUT (a code the task can act on), not with
 * TOOL_FAILED from an AbortError escaping the body read.
 */
import assert from "node:assert/strict";
import { dbTests } from "../support/db.ts";
import { harness, runToEnd } from "../support/engine_harness.ts";
import { callOf, startWith, taskName } from "../support/engine_scenarios.ts";

const { test } = dbTests("engine_service_stall");

/** Raw TCP: a 200 with a Content-Length of 100, 10 bytes of it, then nothing until closed. */
function stallingService() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      const head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" +
        "content-length: 100\r\n\r\n";
      conn.read(new Uint8Array(64 * 1024))
        .then(() => conn.write(new TextEncoder().encode(head + '{"result":')))
        .catch(() => {});
    }
  })().catch(() => {});
  return {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    close() {
      for (const conn of conns) {
        try {
          conn.close();
        } catch { /* closed by the client already */ }
      }
      listener.close();
    },
  };
}

test("a service that sends its headers and then stalls ends the call with SERVICE_TIMEOUT, not TOOL_FAILED", async (db) => {
  const service = stallingService();
  try {
    const name = taskName("stall").replace(/[^A-Za-z0-9_-]/g, "_");
    await db.query("insert into quickjs.services (name, url, timeout_ms) values ($1, $2, $3)", [
      name,
      service.url,
      300,
    ]);
    const h = harness(db.store);
    const started = performance.now();
    const id = await startWith(
      h,
      `export default async function ({ svc }) {
        try {
          return { value: await tools[svc].slow.body() };
        } catch (e) {
          return { code: e.code, message: e.message };
        }
      }`,
      { svc: name },
    );
    const run = await runToEnd(h, id);
    const elapsed = performance.now() - started;
    assert.equal(run.status, "completed", JSON.stringify(run.error));
    const caught = run.result as Record<string, unknown>;
    assert.equal(caught.code, "SERVICE_TIMEOUT", JSON.stringify(caught));
    assert.match(caught.message as string, /within 300 ms/);
    assert.ok(elapsed < 3000, `gave up after ${Math.round(elapsed)} ms`);
    assert.equal((await callOf(h, id, 1)).error?.code, "SERVICE_TIMEOUT");
  } finally {
    service.close();
  }
});
