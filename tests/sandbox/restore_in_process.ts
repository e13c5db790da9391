#!/usr/bin/env -S deno run -A
/**
 * Restores a snapshot file in this (new) process, settles call 1 with null, runs the VM
 * to its end and prints `{ state, seed }` as JSON: what a worker elsewhere would see, and
 * this process's boot image seed words. snapshot_test.ts spawns it.
 */
import { parseArgs } from "node:util";
import {
  getBootImage,
  resolveLimits,
  restoreSnapshot,
} from "../../supabase/functions/_shared/quickjs/mod.ts";

async function main() {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: { "run-id": { type: "string" } },
    allowPositionals: true,
  });
  const bytes = await Deno.readFile(positionals[0]!);
  const boot = await getBootImage();
  const { vm } = await restoreSnapshot(bytes, {
    runId: values["run-id"]!,
    limits: resolveLimits({}),
  });
  try {
    vm.settle(1, { ok: true, value: null });
    const seed = boot.seedWords.map((address) => boot.image[address >> 2]! >>> 0);
    console.log(JSON.stringify({ state: vm.run(), seed }));
  } finally {
    vm.dispose();
  }
}

if (import.meta.main) await main();
