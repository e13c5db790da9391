/**
 * takeSnapshot and restoreSnapshot on real VMs: a snapshot belongs to its run, restores
 * only under its task's limits and its key, hands back the header it verified, and a
 * restored VM continues Math.random's exact sequence, also in another process.
 */
import { restoreInAnotherProcess } from "./restore_in_process.ts";
import assert from "node:assert/strict";
import {
  getBootImage,
  resolveLimits,
  restoreSnapshot,
  SandboxError,
  type SnapshotKey,
  takeSnapshot,
  TaskVm,
} from "../../supabase/functions/_shared/quickjs/mod.ts";
import { TEST_CONTEXT } from "./drive.ts";

const LIMITS = resolveLimits({});
const RUN = TEST_CONTEXT.runId;

/** Draws two numbers, parks on call 1, then draws eight more. */
const RANDOM_TASK = `export default async function () {
  const before = [Math.random(), Math.random()];
  await tools.svc.wait();
  const after = [];
  for (let i = 0; i < 8; i++) after.push(Math.random());
  return { before, after };
}`;

async function parked(code = RANDOM_TASK, limits = LIMITS): Promise<TaskVm> {
  const vm = await TaskVm.create({ limits });
  assert.deepEqual(vm.start({ code }, null, TEST_CONTEXT), { kind: "parked", calls: [1] });
  vm.takeCalls();
  return vm;
}

async function refused(promise: Promise<unknown>, code: string, message: RegExp) {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(e instanceof SandboxError, String(e));
    assert.equal(e.code, code, e.message);
    assert.match(e.message, message);
    return true;
  });
}

Deno.test("restoreSnapshot returns the VM and the header it verified", async () => {
  using vm = await parked();
  const snapshot = await takeSnapshot(vm, { runId: RUN });
  assert.equal(snapshot.header.runId, RUN);
  assert.equal(snapshot.header.keyId, null);
  const restored = await restoreSnapshot(snapshot.bytes, { runId: RUN, limits: LIMITS });
  using restoredVm = restored.vm;
  assert.deepEqual(restored.header, snapshot.header);
  assert.deepEqual(restored.header.parkedCalls, [1]);
  assert.deepEqual(restoredVm.state(), { kind: "parked", calls: [1] });
});

Deno.test("a snapshot restored under another run fails with SNAPSHOT_CORRUPT", async () => {
  using vm = await parked();
  const { bytes } = await takeSnapshot(vm, { runId: RUN });
  await refused(
    restoreSnapshot(bytes, { runId: "run-2", limits: LIMITS }),
    "SNAPSHOT_CORRUPT",
    /belongs to run run-1, not to run run-2/,
  );
});

Deno.test("a snapshot whose limits are not the task's fails with SNAPSHOT_CORRUPT", async () => {
  using vm = await parked();
  const { bytes } = await takeSnapshot(vm, { runId: RUN });
  await refused(
    restoreSnapshot(bytes, { runId: RUN, limits: resolveLimits({ memoryBytes: 64 << 20 }) }),
    "SNAPSHOT_CORRUPT",
    /limits .* are not the task's/,
  );
});

Deno.test("the restored VM runs under the caller's limits, equal to the header's", async () => {
  const limits = resolveLimits({ resultBytes: 64, sliceMs: 500 });
  using vm = await parked(
    `export default async function () { await tools.svc.wait(); return "x".repeat(100); }`,
    limits,
  );
  const { bytes } = await takeSnapshot(vm, { runId: RUN });
  // key order does not matter, values do
  const reordered = Object.fromEntries(Object.entries(limits).reverse()) as typeof limits;
  using restored = (await restoreSnapshot(bytes, { runId: RUN, limits: reordered })).vm;
  assert.equal(restored.limits, reordered);
  restored.settle(1, { ok: true, value: null });
  const state = restored.run();
  assert.equal(state.kind === "failed" && state.error.code, "RESULT_TOO_LARGE");
});

Deno.test("a keyed snapshot restores with its key only", async () => {
  const key: SnapshotKey = { id: "2026-12", secret: crypto.getRandomValues(new Uint8Array(32)) };
  using vm = await parked();
  const { bytes, header } = await takeSnapshot(vm, { runId: RUN, key });
  assert.equal(header.keyId, "2026-12");
  using restored = (await restoreSnapshot(bytes, { runId: RUN, limits: LIMITS, key })).vm;
  assert.deepEqual(restored.state(), { kind: "parked", calls: [1] });
  await refused(
    restoreSnapshot(bytes, { runId: RUN, limits: LIMITS }),
    "SNAPSHOT_CORRUPT",
    /checksum mismatch/,
  );
  const other = { id: "2026-12", secret: crypto.getRandomValues(new Uint8Array(32)) };
  await refused(
    restoreSnapshot(bytes, { runId: RUN, limits: LIMITS, key: other }),
    "SNAPSHOT_CORRUPT",
    /checksum mismatch/,
  );
  const unkeyed = await takeSnapshot(vm, { runId: RUN });
  await refused(
    restoreSnapshot(unkeyed.bytes, { runId: RUN, limits: LIMITS, key }),
    "SNAPSHOT_CORRUPT",
    /made with no key/,
  );
});

Deno.test("the header records the boot image's seed words the pages were XORed against", async () => {
  using vm = await parked();
  const { header } = await takeSnapshot(vm, { runId: RUN });
  const boot = await getBootImage();
  assert.ok(boot.seedWords.length > 0, "QuickJS seeds Math.random in the set-up");
  assert.deepEqual(
    header.seedWords,
    boot.seedWords.map((address) => [address, boot.image[address >> 2]! >>> 0]),
  );
});

Deno.test("Math.random continues its exact sequence after a restore in another process", async () => {
  using vm = await parked();
  const { bytes } = await takeSnapshot(vm, { runId: RUN });
  // what the VM draws without the suspension
  vm.settle(1, { ok: true, value: null });
  const here = vm.run();
  assert.equal(here.kind, "done");
  const there = await restoreInAnotherProcess(bytes, RUN);
  // the other process's boot image was seeded differently: the case the header's seed
  // words are for (without them its state was ours XOR both seeds)
  const boot = await getBootImage();
  const seed = boot.seedWords.map((address) => boot.image[address >> 2]! >>> 0);
  assert.notDeepEqual(there.seed, seed, "both processes booted with the same seed");
  assert.deepEqual(there.state, here);
});
