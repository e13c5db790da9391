#!/usr/bin/env -S deno run -A
/**
 * Restores a snapshot file in this (new) process, settles call 1 with null, runs the VM
 * to its end and prints `{ state, seed }` as JSON: what a worker elsewhere would see, and
 * this process's boot image seed words. snapshot_test.ts and reuse_test.ts spawn it through
 * restoreInAnotherProcess.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import {
  getBootImage,
  resolveLimits,
  restoreSnapshot,
  type VmState,
} from "../../supabase/functions/_shared/quickjs/mod.ts";

/** Runs this script on `bytes` in a new process: the state it ended in and its seed words. */
export async function restoreInAnotherProcess(
  bytes: Uint8Array,
  runId: string,
): Promise<{ state: VmState; seed: number[] }> {
  const file = await Deno.makeTempFile({ suffix: ".qjsnap" });
  try {
    await Deno.writeFile(file, bytes);
    const output = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--frozen",
        "--config",
        fileURLToPath(new URL("../../deno.json", import.meta.url)),
        fileURLToPath(import.meta.url),
        file,
        "--run-id",
        runId,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
    return JSON.parse(new TextDecoder().decode(output.stdout));
  } finally {
    await Deno.remove(file);
  }
}

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
