/**
 * What `supabase functions deploy quickjs` ships, measured: the local modules of the
 * function's module graph (`deno info --json`), every npm package that graph reaches with
 * its dependencies (the edge runtime's bundle carries each such package's whole folder, as
 * `deno compile` does), and config.toml's static files (the vendored wasm). Each part's
 * bytes as on disk and gzipped (the upload is compressed; which figure the 20 MB limit
 * counts is not documented, so both are shown).
 */
import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";

export const ROOT = new URL("../../", import.meta.url);
export const ENTRY = new URL("supabase/functions/quickjs/index.ts", ROOT);
/** Where `deno task prepare-deploy` puts the wasm (config.toml: static_files). */
export const STATIC_DIR = new URL("supabase/functions/_shared/quickjs/sandbox/wasm/", ROOT);
/** Supabase's limit on a function's bundle: "20 MB" (decimal, the smaller reading). */
export const BUNDLE_LIMIT_BYTES = 20_000_000;

export interface BundlePart {
  kind: "local" | "npm" | "static";
  /** "supabase/functions (N modules)", "zod@4.6.7", "sandbox/wasm/asyncify.wasm". */
  name: string;
  files: number;
  bytes: number;
  gzipBytes: number;
  /** npm: which package brought it in (absent for a package the code imports). */
  via?: string;
}

export interface BundleReport {
  entry: string;
  parts: BundlePart[];
  bytes: number;
  gzipBytes: number;
  limitBytes: number;
  /** Static files config.toml expects and that are not there (run prepare-deploy). */
  missing: string[];
  /** Over the limit by the bytes on disk, or by the gzipped estimate. */
  overRaw: boolean;
  overGzip: boolean;
}

interface DenoInfo {
  modules: { specifier: string; kind?: string; size?: number; npmPackage?: string }[];
  npmPackages?: Record<string, { dependencies?: string[]; localPath?: string }>;
}

/** `deno info --json` of an entry, run from the project root; throws with its stderr. */
export async function denoInfo(entry: URL): Promise<DenoInfo> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", "--frozen", fileURLToPath(entry)],
    cwd: fileURLToPath(ROOT),
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  if (!output.success) {
    throw new Error(`deno info failed: ${new TextDecoder().decode(output.stderr).trim()}`);
  }
  return JSON.parse(new TextDecoder().decode(output.stdout));
}

/** Every file below `dir`, read. */
async function filesOf(dir: string): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) out.push(...await filesOf(path));
    else if (entry.isFile) out.push(await Deno.readFile(path));
  }
  return out;
}

function part(
  kind: BundlePart["kind"],
  name: string,
  contents: Uint8Array[],
  via?: string,
): BundlePart {
  const bytes = contents.reduce((n, c) => n + c.length, 0);
  // one gzip stream per part: close to what an archive of the part compresses to
  const joined = new Uint8Array(bytes);
  let at = 0;
  for (const c of contents) (joined.set(c, at), at += c.length);
  const gzipBytes = bytes === 0 ? 0 : gzipSync(joined, { level: 9 }).length;
  return { kind, name, files: contents.length, bytes, gzipBytes, ...(via ? { via } : {}) };
}

export async function measureBundle(
  options: { entry?: URL; staticDir?: URL; limitBytes?: number; expectStatic?: string[] } = {},
): Promise<BundleReport> {
  const entry = options.entry ?? ENTRY;
  const staticDir = options.staticDir ?? STATIC_DIR;
  const info = await denoInfo(entry);
  const parts: BundlePart[] = [];

  const local = info.modules.filter((m) => m.specifier.startsWith("file:"));
  parts.push(part(
    "local",
    `local modules (${local.length})`,
    await Promise.all(local.map((m) => Deno.readFile(new URL(m.specifier)))),
  ));

  // the packages the code imports, then everything they depend on
  const packages = info.npmPackages ?? {};
  const imported = [...new Set(info.modules.flatMap((m) => m.npmPackage ? [m.npmPackage] : []))]
    .sort();
  const via = new Map<string, string | undefined>(imported.map((p) => [p, undefined]));
  const queue = [...imported];
  while (queue.length) {
    const id = queue.shift()!;
    for (const dep of packages[id]?.dependencies ?? []) {
      if (!via.has(dep)) {
        via.set(dep, via.get(id) ?? id);
        queue.push(dep);
      }
    }
  }
  for (const [id, from] of [...via].sort(([a], [b]) => a.localeCompare(b))) {
    const path = packages[id]?.localPath;
    if (!path) throw new Error(`npm package ${id} is not in Deno's cache: run deno install`);
    parts.push(part("npm", id, await filesOf(path), from));
  }

  const missing: string[] = [];
  const staticFiles: string[] = [];
  try {
    for await (const e of Deno.readDir(staticDir)) if (e.isFile) staticFiles.push(e.name);
  } catch {
    // absent: reported below
  }
  for (const name of options.expectStatic ?? ["asyncify.wasm", "asyncify.json"]) {
    if (!staticFiles.includes(name)) missing.push(new URL(name, staticDir).pathname);
  }
  for (const name of staticFiles.sort()) {
    parts.push(part("static", `static ${name}`, [await Deno.readFile(new URL(name, staticDir))]));
  }

  const bytes = parts.reduce((n, p) => n + p.bytes, 0);
  const gzipBytes = parts.reduce((n, p) => n + p.gzipBytes, 0);
  const limitBytes = options.limitBytes ?? BUNDLE_LIMIT_BYTES;
  return {
    entry: fileURLToPath(entry),
    parts,
    bytes,
    gzipBytes,
    limitBytes,
    missing,
    overRaw: bytes > limitBytes,
    overGzip: gzipBytes > limitBytes,
  };
}
