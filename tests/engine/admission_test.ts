/**
 * Memory admission (engine/admission.ts): VMs are admitted against the isolate's budget of
 * wasm bytes, in arrival order; what does not fit waits; disposed VMs' memories are reused.
 */
import assert from "node:assert/strict";
import {
  DEFAULT_ISOLATE_MEMORY_BYTES,
  freshVmBytes,
  isolateBudgetFromEnv,
  MemoryAdmission,
  vmBytesFor,
} from "../../supabase/functions/_shared/quickjs/engine/admission.ts";
import {
  DEFAULT_LIMITS,
  LIMIT_BOUNDS,
  resolveLimits,
  TaskVm,
} from "../../supabase/functions/_shared/quickjs/mod.ts";
import { isPooled } from "../../supabase/functions/_shared/quickjs/sandbox/memory_pool.ts";
import {
  deadStackPages,
  PAGE_SIZE,
} from "../../supabase/functions/_shared/quickjs/sandbox/layout.ts";

const MiB = 1024 * 1024;
const settled = () => new Promise((r) => setTimeout(r, 0));

Deno.test("VMs are admitted up to the budget; the next one waits until one is released", async () => {
  const admission = new MemoryAdmission(100 * MiB);
  const a = await admission.acquire(40 * MiB);
  const b = await admission.acquire(40 * MiB);
  let third: unknown;
  const waiting = admission.acquire(40 * MiB).then((t) => (third = t));
  await settled();
  assert.equal(third, undefined);
  assert.equal(admission.waiting, 1);
  a.release();
  await waiting;
  assert.ok(third);
  assert.equal(admission.live, 2);
  b.release();
  a.release(); // twice is once
  assert.equal(admission.live, 1);
});

Deno.test("admission is first come, first served: a small request does not overtake a large one", async () => {
  const admission = new MemoryAdmission(100 * MiB);
  const a = await admission.acquire(60 * MiB);
  const order: string[] = [];
  const large = admission.acquire(80 * MiB).then((t) => (order.push("large"), t));
  const small = admission.acquire(10 * MiB).then((t) => (order.push("small"), t));
  await settled();
  assert.deepEqual(order, []);
  a.release();
  (await large).release();
  (await small).release();
  assert.deepEqual(order, ["large", "small"]);
});

Deno.test("a VM larger than the whole budget runs alone rather than never", async () => {
  const admission = new MemoryAdmission(50 * MiB);
  const big = await admission.acquire(80 * MiB);
  assert.equal(admission.available(10 * MiB, 5), 0);
  big.release();
  assert.equal(admission.available(10 * MiB, 5), 5);
});

Deno.test("capacity() says how many runs to claim, and waits while none fits", async () => {
  const admission = new MemoryAdmission(100 * MiB);
  assert.equal(await admission.capacity(30 * MiB, 10), 3);
  assert.equal(await admission.capacity(30 * MiB, 2), 2);
  const held = await admission.acquire(90 * MiB);
  let answer: number | undefined;
  const pending = admission.capacity(30 * MiB, 10).then((n) => (answer = n));
  await settled();
  assert.equal(answer, undefined);
  held.release();
  await pending;
  assert.equal(answer, 3);
});

Deno.test("the default VM fits three times in the default budget, the largest allowed once", async () => {
  const fresh = await freshVmBytes(DEFAULT_LIMITS);
  assert.ok(fresh <= 42 * MiB, `a default VM reserves ${fresh / MiB} MiB`);
  assert.equal(Math.floor(DEFAULT_ISOLATE_MEMORY_BYTES / fresh), 3);
  const largest = await freshVmBytes(resolveLimits({ memoryBytes: LIMIT_BOUNDS.memoryBytes[1] }));
  assert.ok(largest <= DEFAULT_ISOLATE_MEMORY_BYTES, `the largest VM is ${largest / MiB} MiB`);
  // a run reserves what its limits make (a restore too); bad limits cost a default VM
  const big = resolveLimits({ memoryBytes: 64 * MiB });
  assert.equal(await vmBytesFor({ limits: { memoryBytes: 64 * MiB } }), await freshVmBytes(big));
  assert.equal(await vmBytesFor({ limits: { memoryBytes: 5 } }), fresh);
});

Deno.test("QUICKJS_ISOLATE_MEMORY_BYTES sets the budget; nonsense is refused", () => {
  const env = (value?: string) => ({ get: () => value });
  assert.equal(isolateBudgetFromEnv(env()), DEFAULT_ISOLATE_MEMORY_BYTES);
  assert.equal(isolateBudgetFromEnv(env(String(64 * MiB))), 64 * MiB);
  assert.throws(() => isolateBudgetFromEnv(env("lots")), /QUICKJS_ISOLATE_MEMORY_BYTES/);
});

Deno.test("a disposed VM's memory is reused, its live pages zeroed, by the next VM of its size, and stays counted meanwhile", async () => {
  const admission = new MemoryAdmission(100 * MiB);
  const limits = resolveLimits({ memoryBytes: 2 * MiB });
  const bytes = await freshVmBytes(limits);
  const ticket = await admission.acquire(bytes);
  const first = await TaskVm.create({ limits });
  const memory = first.instance.memory;
  // dirty a live page the task never uses (deep in the C stack, below its dead top): the pool
  // zeroes the live pages below the heap break when the memory comes back
  const dirty = (deadStackPages(first.instance.build.facts.heapBase).first - 1) * PAGE_SIZE;
  new Uint8Array(memory.buffer).fill(7, dirty, dirty + PAGE_SIZE);
  first.dispose();
  ticket.release(memory);
  assert.ok(isPooled(memory));
  assert.equal(admission.countedBytes, bytes, "idle in the pool, still alive, still counted");
  const again = await admission.acquire(bytes);
  assert.equal(admission.countedBytes, bytes, "reuse costs no new memory");
  const second = await TaskVm.create({ limits });
  try {
    assert.equal(second.instance.memory, memory);
    const page = new Uint8Array(memory.buffer, dirty, PAGE_SIZE);
    assert.ok(page.every((b) => b === 0), "zeroed before reuse");
    const state = second.start(
      { code: "export default async () => 6 * 7", filename: "t.js" },
      null,
      { runId: "r", task: "t", attempt: 1 },
    );
    assert.equal(state.kind === "done" && state.result, 42);
  } finally {
    second.dispose();
    again.release(second.instance.memory);
  }
});
