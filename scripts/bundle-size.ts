#!/usr/bin/env -S deno run -A
/**
 * How big the deployed `quickjs` function is, against Supabase's 20 MB bundle limit: the
 * local modules of its graph, each npm package it reaches (whole folders, as the bundle
 * carries them) and the static files (the wasm `deno task prepare-deploy` vendors).
 *
 *   deno task bundle-size [--json] [--limit BYTES]
 *
 * Exit code: 0 when the bundle fits; 1 when its compressed size (what is uploaded) is over
 * the limit, the vendored wasm is missing, or the graph cannot be read; 2 on bad usage.
 * Over the limit uncompressed only is a warning: which figure Supabase counts is not
 * documented.
 */
import { parseArgs } from "node:util";
import { BUNDLE_LIMIT_BYTES, type BundleReport, measureBundle } from "./lib/bundle_size.ts";
import { bytes, table } from "./lib/format.ts";

const USAGE = "usage: bundle-size [--json] [--limit BYTES]";

export async function main(args: string[] = Deno.args): Promise<number> {
  let json: boolean;
  let limitBytes: number;
  try {
    const { values } = parseArgs({
      args,
      options: {
        json: { type: "boolean", default: false },
        limit: { type: "string", default: String(BUNDLE_LIMIT_BYTES) },
        help: { type: "boolean", short: "h", default: false },
      },
    });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    json = values.json;
    limitBytes = Number(values.limit);
    if (!Number.isInteger(limitBytes) || limitBytes <= 0) {
      throw new Error("--limit must be a number of bytes");
    }
  } catch (e) {
    console.error(`bundle-size: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  let report: BundleReport;
  try {
    report = await measureBundle({ limitBytes });
  } catch (e) {
    console.error(`bundle-size: ${(e as Error).message}`);
    return 1;
  }
  const ok = !report.overGzip && report.missing.length === 0;
  if (json) {
    console.log(JSON.stringify(report));
    return ok ? 0 : 1;
  }
  for (
    const line of table(
      ["part", "files", "bytes", "gzip", "via"],
      [
        ...report.parts.map((p) => [
          p.kind === "npm" ? `npm ${p.name}` : p.name,
          String(p.files),
          bytes(p.bytes),
          bytes(p.gzipBytes),
          p.via ?? "",
        ]),
        [
          "total",
          String(report.parts.reduce((n, p) => n + p.files, 0)),
          bytes(report.bytes),
          bytes(report.gzipBytes),
          "",
        ],
      ],
    )
  ) console.log(line);
  console.log("");
  const limit = `${(report.limitBytes / 1e6).toFixed(1)} MB`;
  for (const path of report.missing) {
    console.log(`MISSING ${path}: run \`deno task prepare-deploy\` before deploying`);
  }
  if (report.overGzip) {
    console.log(`OVER the ${limit} limit: ${bytes(report.gzipBytes)} compressed`);
  } else {
    console.log(`fits the ${limit} limit: ${bytes(report.gzipBytes)} compressed`);
    if (report.overRaw) {
      console.log(
        `warning: ${
          bytes(report.bytes)
        } uncompressed is over ${limit}, should the limit count that`,
      );
    }
  }
  return ok ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main());
