/**
 * The VM's set-up is deterministic (the snapshot relies on it: a restore must put the
 * runtime and context where the snapshot says), and every QuickJS handle has an owner.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  DEFAULT_LIMITS,
  getBootImage,
  TaskVm,
  VENDORED_WASM_DIR,
} from "../../supabase/functions/_shared/quickjs/mod.ts";
import { readBuildBytes } from "../../supabase/functions/_shared/quickjs/sandbox/wasm.ts";
import { drive, newVm, resultOf } from "./drive.ts";

for (const variant of ["asyncify", "sync"] as const) {
  Deno.test(`two fresh VMs (${variant}) have identical runtime and context pointers`, async () => {
    using a = await newVm({}, variant);
    using b = await newVm({}, variant);
    const pointers = a.pointers();
    assert.ok(pointers.runtime > 0 && pointers.context > 0);
    assert.deepEqual(b.pointers(), pointers);
    assert.deepEqual(pointers, (await getBootImage(variant)).pointers);
    // ...and a VM that ran a task does not move the next one.
    assert.equal(resultOf(drive(a, `export default async function () { return 1; }`)), 1);
    using c = await newVm({}, variant);
    assert.deepEqual(c.pointers(), pointers);
  });
}

Deno.test("two processes compute the same boot image fingerprint", async () => {
  const vmModule = new URL("../../supabase/functions/_shared/quickjs/sandbox/vm.ts", import.meta.url);
  const config = new URL("../../deno.json", import.meta.url);
  const script = `import { getBootImage } from ${JSON.stringify(vmModule.href)};
    console.log((await getBootImage()).fingerprint);`;
  // Different working directories, locales and timezones: none may reach the heap.
  const environments = [
    { cwd: new URL("../..", import.meta.url), env: { LANG: "en_US.UTF-8", TZ: "UTC" } },
    { cwd: new URL("file:///tmp/"), env: { LANG: "de_DE.UTF-8", TZ: "Asia/Tokyo" } },
  ];
  const fingerprints = await Promise.all(environments.map(async ({ cwd, env }) => {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--config", fileURLToPath(config), script],
      cwd,
      env,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 0, stderr);
    return new TextDecoder().decode(output.stdout).trim();
  }));
  assert.match(fingerprints[0]!, /^asyncify-[0-9a-f]{12}-[0-9a-f]{32}$/);
  assert.equal(fingerprints[1], fingerprints[0]);
  assert.equal((await getBootImage()).fingerprint, fingerprints[0]);
});

Deno.test("disposing a VM whose host code leaked a handle throws", async () => {
  // The control: the same handle, disposed by its owner, and dispose() is quiet.
  const tidy = await TaskVm.create({ limits: DEFAULT_LIMITS });
  tidy.context.newObject().dispose();
  tidy.dispose();
  assert.equal(tidy.disposed, true);

  const leaky = await TaskVm.create({ limits: DEFAULT_LIMITS });
  const leaked = leaky.context.newObject();
  assert.equal(leaked.alive, true);
  // QuickJS aborts when its runtime still holds an object at teardown.
  assert.throws(() => leaky.dispose(), /list_empty|Aborted/);
});

Deno.test("without the npm package's wasm (a deployed bundle), the copy prepare-deploy vendored is used", async () => {
  const prepared = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--frozen", "scripts/prepare-deploy.ts", "--json"],
    cwd: new URL("../../", import.meta.url),
    stdout: "piped",
  }).output();
  assert.ok(prepared.success);
  const fromPackage = await readBuildBytes("asyncify");
  const fromCopy = await readBuildBytes(
    "asyncify",
    "file:///no/such/package/emscripten-module.wasm",
  );
  assert.deepEqual(fromCopy, fromPackage);
  // a copy from another package version is refused rather than loaded
  const record = new URL("asyncify.json", VENDORED_WASM_DIR);
  const saved = await Deno.readTextFile(record);
  try {
    await Deno.writeTextFile(record, JSON.stringify({ packageVersion: "0.0.1" }));
    await assert.rejects(
      readBuildBytes("asyncify", "file:///no/such/package/emscripten-module.wasm"),
      /vendored QuickJS wasm is from .* 0\.0\.1/,
    );
  } finally {
    await Deno.writeTextFile(record, saved);
  }
});
