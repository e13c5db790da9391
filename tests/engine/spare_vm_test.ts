/**
 * The spare VM (engine/spare_vm.ts): made ahead for the default limits, handed to the first
 * run that fits and made again after it, never to a run with other limits.
 */
import assert from "node:assert/strict";
import { SpareVm } from "../../supabase/functions/_shared/quickjs/engine/spare_vm.ts";
import { resolveLimits } from "../../supabase/functions/_shared/quickjs/mod.ts";

Deno.test("a spare VM is taken once for the default limits and made again after", async () => {
  const spare = new SpareVm(resolveLimits(), () => Date.now());
  assert.equal(await spare.take(resolveLimits()), undefined, "none before fill()");
  spare.fill();
  assert.equal(
    await spare.take(resolveLimits({ memoryBytes: 64 * 1024 * 1024 })),
    undefined,
    "other limits",
  );
  const vm = await spare.take(resolveLimits());
  assert.ok(vm, "the spare");
  assert.equal(vm.started, false, "fresh, not started");
  const next = await spare.take(resolveLimits());
  assert.ok(next && next !== vm, "another one was made after it");
  vm.dispose();
  next.dispose();
  spare.fill();
  await spare.close();
  assert.equal(await spare.take(resolveLimits()), undefined, "none after close()");
});
