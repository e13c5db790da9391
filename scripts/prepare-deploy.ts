#!/usr/bin/env -S deno run -A
/**
 * Before `supabase functions deploy quickjs`: copies the QuickJS wasm of the pinned npm
 * package next to the sandbox (supabase/functions/_shared/quickjs/sandbox/wasm/), where
 * config.toml's static_files puts it into the function's bundle. The edge runtime does not
 * ship an npm package's .wasm on its own. The copies are not committed (.gitignore).
 *
 *   deno task prepare-deploy [--json]
 */
import { parseArgs } from "node:util";
import {
  BUILD_VARIANT,
  getBuild,
  VENDORED_WASM_DIR,
} from "../supabase/functions/_shared/quickjs/mod.ts";

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: { json: { type: "boolean", default: false } },
  });
  const build = await getBuild(BUILD_VARIANT);
  const source = new URL(import.meta.resolve(`${build.packageName}/wasm`));
  await Deno.mkdir(VENDORED_WASM_DIR, { recursive: true });
  const target = new URL(`${build.variant}.wasm`, VENDORED_WASM_DIR);
  await Deno.copyFile(source, target);
  const record = {
    packageName: build.packageName,
    packageVersion: build.packageVersion,
    wasmSha256: build.wasmSha256,
  };
  await Deno.writeTextFile(
    new URL(`${build.variant}.json`, VENDORED_WASM_DIR),
    JSON.stringify(record, null, 2) + "\n",
  );
  if (values.json) console.log(JSON.stringify({ ...record, file: target.pathname }));
  else {
    console.log(
      `copied ${build.packageName}@${build.packageVersion} wasm (sha256 ${
        build.wasmSha256.slice(0, 12)
      }…) to ${target.pathname}`,
    );
  }
  return 0;
}

if (import.meta.main) Deno.exit(await main());
