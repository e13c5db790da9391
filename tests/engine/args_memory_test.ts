/**
 * The server's memory under the tool-argument attack: three runs, each calling a tool 24
 * times with a 16 MiB string. Before argsBytes the host parsed and journaled every copy
 * (the server grew from 138 MB to 1,870 MB resident); now each call is refused inside the
 * VM, and the host never sees the bytes.
 */
import assert from "node:assert/strict";
import { dbTests } from "../support/db.ts";
import { harness, runToEnd, startTask } from "../support/engine_harness.ts";

const { test } = dbTests("engine_args_memory");

const MB = 1_000_000;
/**
 * Growth of the process's resident memory the attack may cause: three VMs of ~41 MiB wasm
 * memory each can be alive at once (engine/admission.ts), plus the V8 garbage not yet
 * collected; 1,730 MB was the growth without the limit.
 */
const RSS_GROWTH_BOUND_MB = 250;

const ATTACK = `export default async function () {
  const big = "x".repeat(16 * 1024 * 1024);
  const codes = [];
  for (let i = 0; i < 24; i++) {
    try {
      await tools.sink.put(big);
      codes.push("sent");
    } catch (e) {
      codes.push(e.code);
    }
  }
  return codes;
}`;

test("three runs calling a tool 24 times with a 16 MiB argument keep the server's RSS growth under 250 MB", async (db) => {
  let received = 0;
  const h = harness(db.store, { custom: { sink: () => ++received } });
  const before = Deno.memoryUsage().rss;
  let peak = before;
  const ids = [];
  for (let i = 0; i < 3; i++) ids.push(await startTask(h, ATTACK));
  const runs = [];
  for (const id of ids) {
    runs.push(await runToEnd(h, id));
    peak = Math.max(peak, Deno.memoryUsage().rss);
  }
  const growthMb = (peak - before) / MB;
  console.log(`RSS ${(before / MB).toFixed(0)} MB -> peak ${(peak / MB).toFixed(0)} MB`);
  for (const run of runs) {
    assert.equal(run.status, "completed", JSON.stringify(run.error));
    assert.deepEqual(run.result, Array(24).fill("ARGS_TOO_LARGE"));
  }
  assert.equal(received, 0, "no 16 MiB argument reached the tool");
  assert.ok(growthMb < RSS_GROWTH_BOUND_MB, `RSS grew ${growthMb.toFixed(0)} MB`);
});
