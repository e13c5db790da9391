/**
 * A lean deploy, measured: `deno task bundle-size` sums the deployed function's graph (local
 * modules, the npm packages it reaches, the vendored wasm) against Supabase's 20 MB limit,
 * and fails when over it or when the wasm was not vendored; and the function itself fails
 * at boot with WASM_MISSING when neither the npm package's wasm nor the vendored copy can
 * be read, as on a deploy made without `deno task prepare-deploy`.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { runScript } from "../support/cli.ts";
import { measureBundle, STATIC_DIR } from "../../scripts/lib/bundle_size.ts";
import { readBuildBytes } from "../../supabase/functions/_shared/quickjs/sandbox/wasm.ts";
import { WasmMissingError } from "../../supabase/functions/_shared/quickjs/mod.ts";

const ROOT = new URL("../../", import.meta.url);

async function prepareDeploy(): Promise<void> {
  const prepared = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--frozen", "scripts/prepare-deploy.ts", "--json"],
    cwd: ROOT,
    stdout: "piped",
  }).output();
  assert.ok(prepared.success, "prepare-deploy ran");
}

Deno.test("bundle-size counts the local modules, every npm package reached and the vendored wasm", async () => {
  await prepareDeploy();
  const report = await measureBundle();
  const names = report.parts.map((p) => p.name);
  const local = report.parts.find((p) => p.kind === "local")!;
  assert.ok(local.files > 10 && local.bytes > 100_000, "the function's own modules");
  assert.ok(names.includes("quickjs-emscripten-core@0.32.0"), "an imported package");
  // the function imports the core and the one wasm build it runs on, not the package that
  // depends on all four builds (6.7 MiB of debug and sync variants it never loads)
  assert.ok(!names.some((n) => /^quickjs-emscripten@|debug|release-sync/.test(n)), "one build");
  assert.ok(!report.overRaw, `${report.bytes} B on disk fits 20 MB, compressed or not`);
  assert.ok(names.includes("@supabase/auth-js@2.119.1"), "a dependency of one");
  assert.equal(
    report.parts.find((p) => p.name === "@supabase/auth-js@2.119.1")?.via,
    "@supabase/supabase-js@2.119.1",
  );
  assert.ok(!names.some((n) => /pglite/i.test(n)), "no PGlite");
  assert.ok(names.includes("static asyncify.wasm"), "the vendored wasm");
  assert.deepEqual(report.missing, []);
  assert.equal(report.bytes, report.parts.reduce((n, p) => n + p.bytes, 0));
  assert.ok(report.gzipBytes < report.bytes);
  assert.equal(report.limitBytes, 20_000_000);
  assert.ok(!report.overGzip, `compressed ${report.gzipBytes} B fits 20 MB`);
});

Deno.test("deno task bundle-size prints the table and exits 1 over the limit", async () => {
  await prepareDeploy();
  const fits = await runScript("bundle-size.ts", []);
  assert.equal(fits.code, 0, fits.stdout + fits.stderr);
  assert.match(fits.stdout, /^PART\s+FILES\s+BYTES\s+GZIP\s+VIA$/m);
  assert.match(fits.stdout, /^npm zod@\S+\s+\d+\s+[\d.]+ \w+/m);
  assert.match(fits.stdout, /^total\s+\d+\s+[\d.]+ MiB\s+[\d.]+ MiB/m);
  assert.match(fits.stdout, /fits the 20\.0 MB limit/);

  const over = await runScript("bundle-size.ts", ["--limit", "1000000", "--json"]);
  assert.equal(over.code, 1);
  assert.equal(over.json!.overGzip, true);
  assert.equal((await runScript("bundle-size.ts", ["--limit", "x"])).code, 2);
});

Deno.test("bundle-size fails when the wasm was not vendored", async () => {
  const empty = await Deno.makeTempDir();
  try {
    const report = await measureBundle({ staticDir: new URL(`file://${empty}/`) });
    assert.deepEqual(report.missing, [`${empty}/asyncify.wasm`, `${empty}/asyncify.json`]);
    assert.ok(fileURLToPath(STATIC_DIR).endsWith("sandbox/wasm/"));
  } finally {
    await Deno.remove(empty, { recursive: true });
  }
});

Deno.test("without the npm package's wasm and without a vendored copy, the build fails with WasmMissingError", async () => {
  const empty = await Deno.makeTempDir();
  try {
    const error = await readBuildBytes(
      "asyncify",
      "file:///no/such/package/emscripten-module.wasm",
      new URL(`file://${empty}/`),
    ).then(() => undefined, (e) => e);
    assert.ok(error instanceof WasmMissingError, String(error));
    assert.equal(error.name, "WasmMissingError");
    assert.equal(error.code, "WASM_MISSING");
    assert.equal(error.status, 500);
    assert.match(error.message, /no vendored copy exists in .*: run `deno task prepare-deploy`/);
    assert.ok(error.cause, "why the package's file could not be read");
  } finally {
    await Deno.remove(empty, { recursive: true });
  }
});

Deno.test("the function answers WASM_MISSING at boot, before any route, when it cannot read any wasm", async () => {
  // the npm package's wasm is unreadable (as in a deployed bundle) and nothing was vendored
  const wasm = fileURLToPath(import.meta.resolve("@jitl/quickjs-wasmfile-release-asyncify/wasm"));
  const script = `
    const { default: fn } = await import(${
    JSON.stringify(new URL("supabase/functions/quickjs/index.ts", ROOT).href)
  });
    const res = await fn.fetch(new Request("http://edge/quickjs/runs/00000000-0000-0000-0000-000000000000"));
    console.log(JSON.stringify({ status: res.status, body: await res.json() }));`;
  const dir = await Deno.makeTempDir();
  const file = `${dir}/boot.ts`;
  await Deno.writeTextFile(file, script);
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--frozen",
      "--config",
      fileURLToPath(new URL("deno.json", ROOT)),
      // (deno eval ignores deny flags)
      `--deny-read=${wasm},${fileURLToPath(STATIC_DIR)}`,
      file,
    ],
    cwd: ROOT,
    env: { SUPABASE_DB_URL: "postgres://nobody@127.0.0.1:1/none", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output().finally(() => Deno.remove(dir, { recursive: true }));
  const stderr = new TextDecoder().decode(out.stderr);
  const stdout = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!;
  assert.ok(out.success, stderr);
  const { status, body } = JSON.parse(stdout);
  assert.equal(status, 500);
  assert.equal(body.error.code, "WASM_MISSING", stdout);
  assert.match(body.error.message, /deno task prepare-deploy/);
  assert.match(stderr, /quickjs: cannot read the QuickJS wasm/);
});
