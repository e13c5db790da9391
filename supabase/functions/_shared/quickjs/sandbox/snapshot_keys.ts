/**
 * The operator's snapshot keys, from QUICKJS_ENCRYPTION_KEY: with a key set, snapshots are
 * HMAC-signed and their body (the task's heap) AES-256-GCM encrypted (snapshot_codec.ts).
 *
 * Accepted forms (each key 32 random bytes in base64: `openssl rand -base64 32`):
 *   `<id>:<base64>`                       one key
 *   `<id>:<base64>,<old-id>:<base64>,…`   a ring: new snapshots use the first, reads pick
 *                                         the key the snapshot's header names
 *   `{"<id>": "<base64>", …}`             the same ring as JSON (the first entry writes)
 */
import type { SnapshotKey } from "./snapshot_codec.ts";

export const ENCRYPTION_KEY_VARIABLE = "QUICKJS_ENCRYPTION_KEY";

const KEY_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Parses a key ring; throws naming what is wrong (never the key bytes). */
export function parseSnapshotKeys(text: string): SnapshotKey[] {
  const trimmed = text.trim();
  if (trimmed === "") return [];
  let entries: [string, string][];
  if (trimmed.startsWith("{")) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(trimmed);
    } catch {
      throw new Error(`${ENCRYPTION_KEY_VARIABLE} starts with { but is not JSON`);
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      throw new Error(`${ENCRYPTION_KEY_VARIABLE} must be a JSON object of key id → base64`);
    }
    entries = Object.entries(parsed).map(([id, v]) => [id, String(v)]);
  } else {
    entries = trimmed.split(",").map((part) => {
      const at = part.indexOf(":");
      if (at < 0) throw new Error(`${ENCRYPTION_KEY_VARIABLE}: each key is <id>:<base64>`);
      return [part.slice(0, at).trim(), part.slice(at + 1).trim()];
    });
  }
  const seen = new Set<string>();
  return entries.map(([id, base64]) => {
    if (!KEY_ID.test(id)) {
      throw new Error(`${ENCRYPTION_KEY_VARIABLE}: bad key id ${JSON.stringify(id)}`);
    }
    if (seen.has(id)) throw new Error(`${ENCRYPTION_KEY_VARIABLE}: key id ${id} appears twice`);
    seen.add(id);
    let secret: Uint8Array;
    try {
      secret = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    } catch {
      throw new Error(`${ENCRYPTION_KEY_VARIABLE}: key ${id} is not base64`);
    }
    // AES-256 and HMAC-SHA-256 keys are derived from it: fewer bytes would be a weaker key
    if (secret.length !== 32) {
      throw new Error(`${ENCRYPTION_KEY_VARIABLE}: key ${id} is ${secret.length} bytes, not 32`);
    }
    return { id, secret };
  });
}

/** The ring QUICKJS_ENCRYPTION_KEY sets, or none (snapshots then have a plain SHA-256). */
export function snapshotKeysFromEnv(): SnapshotKey[] {
  let text: string | undefined;
  try {
    text = Deno.env.get(ENCRYPTION_KEY_VARIABLE);
  } catch {
    return []; // no env permission: no key
  }
  return text ? parseSnapshotKeys(text) : [];
}
