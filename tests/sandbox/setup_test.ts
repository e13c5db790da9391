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
import { registerSyncBuild } from "../../supabase/functions/_shared/quickjs/dev.ts";
import { readBuildBytes } from "../../supabase/functions/_shared/quickjs/sandbox/wasm.ts";
import { drive, newVm, resultOf } from "./drive.ts";

// the sync build is compared here; only the dev entry can register it
registerSyncBuild();

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
  const vmModule = new URL("../../supabase/functions/_shared/quickjs/mod.ts", import.meta.url);
  const config = new URL("../../deno.json", import.meta.url);
  // SHIFT_MS moves the wall clock the set-up reads, as if the process started hours later
  const script = `const shift = Number(Deno.env.get("SHIFT_MS") ?? 0);
    const realNow = Date.now;
    Date.now = () => realNow() + shift;
    const { getBootImage } = await import(${JSON.stringify(vmModule.href)});
    const boot = await getBootImage();
    const seed = boot.seedWords.map((address) => boot.image[address >> 2] >>> 0);
    console.log(JSON.stringify({ fingerprint: boot.fingerprint, seed }));`;
  // QuickJS seeds Math.random with the time in µs: its high word moves every 2^32 µs
  const HIGH_WORD_MS = 2 ** 32 / 1000;
  // Different working directories, locales, timezones and clocks: none may reach the heap.
  const environments: { cwd: URL; env: Record<string, string> }[] = [
    { cwd: new URL("../..", import.meta.url), env: { LANG: "en_US.UTF-8", TZ: "UTC" } },
    { cwd: new URL("file:///tmp/"), env: { LANG: "de_DE.UTF-8", TZ: "Asia/Tokyo" } },
    { cwd: new URL("file:///tmp/"), env: { SHIFT_MS: String(3 * HIGH_WORD_MS) } },
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
    return JSON.parse(new TextDecoder().decode(output.stdout)) as {
      fingerprint: string;
      seed: number[];
    };
  }));
  const [first, second, later] = fingerprints.map((f) => f.fingerprint);
  assert.match(first!, /^asyncify-[0-9a-f]{12}-[0-9a-f]{32}$/);
  assert.equal(second, first);
  // the shifted clock did reach the seed's high word, and the fingerprint ignores it
  assert.deepEqual(fingerprints[0]!.seed.length, 2);
  assert.notEqual(fingerprints[2]!.seed[1], fingerprints[0]!.seed[1]);
  assert.equal(later, first);
  assert.equal((await getBootImage()).fingerprint, first);
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

Deno.test("without the dev entry, the sync build is not there", async () => {
  const script = `import { getBuild } from ${
    JSON.stringify(new URL("../../supabase/functions/_shared/quickjs/mod.ts", import.meta.url).href)
  };
    try { await getBuild("sync"); console.log("loaded"); } catch (e) { console.log(e.message); }`;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--config", fileURLToPath(new URL("../../deno.json", import.meta.url)), script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  assert.match(new TextDecoder().decode(output.stdout), /sync build is not registered/);
});
