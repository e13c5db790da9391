/**
 * What `supabase functions deploy quickjs` bundles is the module graph of the function's
 * entry: it must hold nothing outside supabase/functions/, no PGlite, no examples and no
 * dev-only module (the library's dev.ts and dev/ folder).
 */
import assert from "node:assert/strict";
import { denoInfo } from "../../scripts/lib/bundle_size.ts";

const ROOT = new URL("../../", import.meta.url);
const ENTRY = new URL("supabase/functions/quickjs/index.ts", ROOT);
const FUNCTIONS = new URL("supabase/functions/", ROOT).href;
const DEV = [
  new URL("supabase/functions/_shared/quickjs/dev.ts", ROOT).href,
  new URL("supabase/functions/_shared/quickjs/dev/", ROOT).href,
];

interface GraphModule {
  specifier: string;
  size?: number;
  dependencies?: {
    code?: { specifier?: string };
    type?: { specifier?: string };
    isDynamic?: boolean;
  }[];
}

function deployedGraph(): Promise<GraphModule[]> {
  return graphOf(ENTRY);
}

/** The module graph `deno info --json` reports (the same call `deno task bundle-size` makes). */
async function graphOf(entry: URL): Promise<GraphModule[]> {
  return (await denoInfo(entry)).modules as GraphModule[];
}

Deno.test("the deployed entry's graph holds only supabase/functions/, no PGlite and no dev module", async () => {
  const modules = await deployedGraph();
  const local = modules.filter((m) => m.specifier.startsWith("file:"));
  assert.ok(local.length > 10, "the graph was read");
  for (const m of local) {
    assert.ok(m.specifier.startsWith(FUNCTIONS), `outside supabase/functions/: ${m.specifier}`);
    for (const dev of DEV) assert.ok(!m.specifier.startsWith(dev), `dev-only: ${m.specifier}`);
  }
  const npm = new Set(
    modules.flatMap((m) =>
      (m.dependencies ?? []).flatMap((d) => [d.code?.specifier, d.type?.specifier])
    ).filter((s): s is string => s?.startsWith("npm:") ?? false),
  );
  for (const specifier of npm) {
    assert.ok(!/pglite/i.test(specifier), `PGlite in the deployed graph: ${specifier}`);
  }
  assert.ok([...npm].some((s) => s.startsWith("npm:quickjs-emscripten")), "the sandbox is there");
  // the product runs the asyncify build only; the sync one is the benchmark's yardstick,
  // registered by the dev entry (dev/sync_build.ts)
  assert.ok(
    [...npm].some((s) => s.startsWith("npm:@jitl/quickjs-wasmfile-release-asyncify")),
    "the asyncify wasm is there",
  );
  for (const specifier of npm) {
    assert.ok(
      !specifier.startsWith("npm:@jitl/quickjs-wasmfile-release-sync"),
      `the sync build in the deployed graph: ${specifier}`,
    );
  }
});

Deno.test("the dev entry's graph has the sync build (the check above can fail)", async () => {
  const modules = await graphOf(new URL("supabase/functions/_shared/quickjs/dev.ts", ROOT));
  const npm = modules.flatMap((m) => (m.dependencies ?? []).map((d) => d.code?.specifier));
  assert.ok(npm.some((s) => s?.startsWith("npm:@jitl/quickjs-wasmfile-release-sync")));
});

/** What `entry` loads when it starts: its static imports, followed, without type-only ones. */
async function loadedAtStart(entry: URL): Promise<Set<string>> {
  const modules = new Map((await graphOf(entry)).map((m) => [m.specifier, m]));
  const seen = new Set<string>();
  const walk = (specifier: string) => {
    if (seen.has(specifier)) return;
    seen.add(specifier);
    for (const d of modules.get(specifier)?.dependencies ?? []) {
      if (d.code?.specifier && !d.isDynamic) walk(d.code.specifier);
    }
  };
  walk(entry.href);
  return seen;
}

Deno.test("the worker starts without supabase-js, PGlite or the sync build (8 MB of RSS it never uses)", async () => {
  const loaded = [...await loadedAtStart(new URL("scripts/worker.ts", ROOT))];
  assert.ok(loaded.some((s) => s.endsWith("/engine/run_loop.ts")), "the graph was read");
  assert.ok(loaded.some((s) => s.startsWith("npm:postgres")), "postgres.js is there");
  for (const s of loaded) {
    assert.ok(!/supabase-js|pglite|wasmfile-release-sync/i.test(s), `loaded at start: ${s}`);
  }
});
