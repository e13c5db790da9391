/**
 * Loads a peer from the bench-only install (BENCH_PEERS_DIR, set by peers.ts): the peers are
 * never dependencies of the project, so they are resolved from that folder, not from here.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

export function peerRequire() {
  const dir = process.env.BENCH_PEERS_DIR;
  if (!dir) throw new Error("BENCH_PEERS_DIR is not set (run through bench/peers/peers.ts)");
  return createRequire(join(dir, "package.json"));
}

/** The installed version (read from its package.json: some packages do not export that). */
export function peerVersion(name) {
  const file = join(process.env.BENCH_PEERS_DIR, "node_modules", name, "package.json");
  return JSON.parse(readFileSync(file, "utf8")).version;
}
