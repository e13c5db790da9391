/**
 * The snapshot's byte format as a pure pair of functions: encodeSnapshot(header, body) →
 * bytes and decodeSnapshot(bytes) → { header, body }. No wasm and no VM: what the bytes
 * mean for a VM is snapshot.ts's business. tests/fixtures/snapshots/ holds a committed
 * sample that must decode and re-encode byte for byte, so a change here is deliberate.
 *
 * Layout: MAGIC (8: "QJSNAP\0" and the format) | digest (32) | header length (u32 LE) |
 *         header JSON (fields in HEADER order) | body (opaque here: snapshot.ts gzips it).
 * The digest covers everything after it: SHA-256, or HMAC-SHA-256 when the caller gives a
 * key, whose id the header then names. With a key the body is also encrypted: IV (12) |
 * AES-256-GCM ciphertext and tag, the header bytes as associated data, so the header stays
 * readable (diagnose) and authenticated while the heap is not readable without the key. The
 * HMAC and AES keys are derived from the key's bytes with HKDF-SHA-256; the IV is derived
 * from the header and body (a synthetic IV: equal bytes give equal snapshots, and a header
 * always differs in createdAt). A header that is not exactly HEADER's shape fails with
 * SNAPSHOT_CORRUPT, like a bad magic, a short file, a digest or tag that does not match.
 */
import { SandboxError } from "./errors.ts";
import { DEFAULT_LIMITS, type SandboxLimits } from "./limits.ts";
import type { BuildVariant } from "./wasm.ts";

/**
 * Format 2 added `runId`, `keyId` and `seedWords` to the header, and the keyed digest;
 * format 3 encrypts the body of a keyed snapshot (and derives its HMAC key with HKDF).
 * Bump it with any change to the layout or the header's fields, and regenerate the golden
 * sample (tests/sandbox/snapshot_golden_test.ts says how).
 */
export const SNAPSHOT_FORMAT = 3;
const MAGIC_PREFIX = [0x51, 0x4a, 0x53, 0x4e, 0x41, 0x50, 0x00]; // "QJSNAP\0"
const MAGIC = new Uint8Array([...MAGIC_PREFIX, SNAPSHOT_FORMAT]);
const DIGEST_BYTES = 32;
const PREFIX_BYTES = MAGIC.length + DIGEST_BYTES + 4;

export interface SnapshotHeader {
  format: number;
  /** The run the VM belongs to: restoring it under another run is refused. */
  runId: string;
  /** Id of the key the digest is an HMAC with; null for a plain SHA-256. */
  keyId: string | null;
  variant: BuildVariant;
  packageVersion: string;
  wasmSha256: string;
  /** Fingerprint of the boot image the pages are a diff against. */
  baseline: string;
  /**
   * The boot image's Math.random seed words, [address, value], in the process that took
   * the snapshot: the pages were XORed against an image holding these values, which
   * differ from process to process (boot_image.ts).
   */
  seedWords: [number, number][];
  memoryBytes: number;
  stackPointer: number;
  heapBreak: number;
  pointers: { runtime: number; context: number; global: number; handles: number[] };
  pageSize: number;
  pageCount: number;
  /** Size of the body before compression. */
  bodyBytes: number;
  codec: "gzip";
  /** Host calls the task was parked on, in call order. */
  parkedCalls: number[];
  /** The task's last call id: calls up to it are in the VM, settled or parked. */
  lastCallId: number;
  /** The limits the VM ran under; a restore must be given the same ones. */
  limits: SandboxLimits;
  createdAt: string;
}

/**
 * A snapshot key, named in the header by `id`: the digest is an HMAC and the body is
 * encrypted with keys derived from `secret`.
 */
export interface SnapshotKey {
  id: string;
  /** Raw key bytes (32 random bytes), or a WebCrypto HKDF key usable to derive keys. */
  secret: Uint8Array | CryptoKey;
}

/**
 * What a decode may verify with: one key, or a key ring (rotation) searched by the keyId the
 * header names; new snapshots are written with the ring's first key.
 */
export type SnapshotKeys = SnapshotKey | readonly SnapshotKey[];

const IV_BYTES = 12;

// ---- the header's shape ------------------------------------------------------------------

/** Checks a value and returns it in canonical form (object keys in schema order). */
type Field<T> = (value: unknown, path: string) => T;

function malformed(path: string, expected: string): never {
  throw new SandboxError("SNAPSHOT_CORRUPT", `snapshot header: ${path} is not ${expected}`);
}

const uint: Field<number> = (v, path) =>
  Number.isSafeInteger(v) && (v as number) >= 0 ? v as number : malformed(path, "an integer ≥ 0");
const finite: Field<number> = (v, path) =>
  typeof v === "number" && Number.isFinite(v) ? v : malformed(path, "a number");
const nonEmpty: Field<string> = (v, path) =>
  typeof v === "string" && v.length > 0 ? v : malformed(path, "a non-empty string");
const hex64: Field<string> = (v, path) =>
  typeof v === "string" && /^[0-9a-f]{64}$/.test(v) ? v : malformed(path, "64 hex digits");
const iso: Field<string> = (v, path) =>
  typeof v === "string" && !Number.isNaN(Date.parse(v)) ? v : malformed(path, "a date");
const word: Field<number> = (v, path) =>
  Number.isSafeInteger(v) && (v as number) >= 0 && (v as number) <= 0xffffffff
    ? v as number
    : malformed(path, "a 32-bit word");

function oneOf<T extends string>(...values: T[]): Field<T> {
  return (v, path) =>
    values.includes(v as T) ? v as T : malformed(path, values.map((x) => `"${x}"`).join(" or "));
}

function orNull<T>(field: Field<T>): Field<T | null> {
  return (v, path) => v === null ? null : field(v, path);
}

function list<T>(item: Field<T>): Field<T[]> {
  return (v, path) =>
    Array.isArray(v) ? v.map((x, i) => item(x, `${path}[${i}]`)) : malformed(path, "an array");
}

function pair<A, B>(first: Field<A>, second: Field<B>): Field<[A, B]> {
  return (v, path) =>
    Array.isArray(v) && v.length === 2
      ? [first(v[0], `${path}[0]`), second(v[1], `${path}[1]`)]
      : malformed(path, "a pair");
}

/** Exactly these keys, no more: an unknown field is a format this code does not know. */
function object<T>(shape: { [K in keyof T]: Field<T[K]> }): Field<T> {
  return (v, path) => {
    if (typeof v !== "object" || v === null || Array.isArray(v)) malformed(path, "an object");
    const record = v as Record<string, unknown>;
    for (const key of Object.keys(record)) {
      if (!(key in shape)) malformed(`${path}.${key}`, "a known field");
    }
    const out = {} as T;
    for (const key of Object.keys(shape) as (keyof T & string)[]) {
      if (!(key in record)) malformed(`${path}.${key}`, "present");
      out[key] = shape[key](record[key], `${path}.${key}`);
    }
    return out;
  };
}

const LIMITS_SHAPE = Object.fromEntries(
  Object.keys(DEFAULT_LIMITS).map((key) => [key, finite]),
) as { [K in keyof SandboxLimits]: Field<number> };

/** The header, field by field, in the order it is written. */
const HEADER: Field<SnapshotHeader> = object<SnapshotHeader>({
  format: uint,
  runId: nonEmpty,
  keyId: orNull(nonEmpty),
  variant: oneOf<BuildVariant>("asyncify", "sync"),
  packageVersion: nonEmpty,
  wasmSha256: hex64,
  baseline: nonEmpty,
  seedWords: list(pair(uint, word)),
  memoryBytes: uint,
  stackPointer: uint,
  heapBreak: uint,
  pointers: object({ runtime: uint, context: uint, global: uint, handles: list(uint) }),
  pageSize: uint,
  pageCount: uint,
  bodyBytes: uint,
  codec: oneOf("gzip"),
  parkedCalls: list(uint),
  lastCallId: uint,
  limits: object<SandboxLimits>(LIMITS_SHAPE),
  createdAt: iso,
});

/**
 * The header in canonical form, or SNAPSHOT_CORRUPT naming the first field that is
 * missing, unknown or of the wrong type. A header of another format is
 * SNAPSHOT_INCOMPATIBLE: its fields may well be right for that format.
 */
export function validateHeader(value: unknown): SnapshotHeader {
  const format = (value as { format?: unknown } | null)?.format;
  if (typeof format === "number" && format !== SNAPSHOT_FORMAT) {
    throw new SandboxError(
      "SNAPSHOT_INCOMPATIBLE",
      `snapshot format ${format} is not supported (this build reads format ${SNAPSHOT_FORMAT})`,
    );
  }
  return HEADER(value, "header");
}

// ---- encode and decode -------------------------------------------------------------------

/**
 * The bytes of a snapshot: its header (checked, and written in canonical field order, so
 * equal headers give equal bytes) and its body. With a key, the header's keyId must be
 * the key's id and the digest is an HMAC; without one, keyId must be null.
 */
export async function encodeSnapshot(
  header: SnapshotHeader,
  body: Uint8Array,
  options: { key?: SnapshotKey } = {},
): Promise<Uint8Array<ArrayBuffer>> {
  const canonical = validateHeader(header);
  if (canonical.keyId !== (options.key?.id ?? null)) {
    throw new Error(
      `the header's keyId ${JSON.stringify(canonical.keyId)} is not the key's ` +
        JSON.stringify(options.key?.id ?? null),
    );
  }
  const headerBytes = new TextEncoder().encode(JSON.stringify(canonical));
  if (options.key) body = await encrypt(options.key, headerBytes, body);
  const out = new Uint8Array(PREFIX_BYTES + headerBytes.length + body.length);
  out.set(MAGIC, 0);
  new DataView(out.buffer).setUint32(MAGIC.length + DIGEST_BYTES, headerBytes.length, true);
  out.set(headerBytes, PREFIX_BYTES);
  out.set(body, PREFIX_BYTES + headerBytes.length);
  const signed = out.subarray(MAGIC.length + DIGEST_BYTES);
  out.set(await digestOf(signed, options.key), MAGIC.length);
  return out;
}

/**
 * Checks the magic, the digest (keyed with `key` when given) and the header's shape, and
 * splits the bytes. Throws SNAPSHOT_CORRUPT, or SNAPSHOT_INCOMPATIBLE for another format.
 * A snapshot made with another key, or with a key when none is given (or the reverse),
 * does not verify.
 */
export async function decodeSnapshot(
  bytes: Uint8Array,
  options: { key?: SnapshotKeys } = {},
): Promise<{ header: SnapshotHeader; body: Uint8Array }> {
  if (bytes.length < MAGIC.length || !MAGIC_PREFIX.every((b, i) => bytes[i] === b)) {
    throw new SandboxError("SNAPSHOT_CORRUPT", "not a QuickJS VM snapshot (bad magic bytes)");
  }
  if (bytes[MAGIC_PREFIX.length] !== SNAPSHOT_FORMAT) {
    throw new SandboxError(
      "SNAPSHOT_INCOMPATIBLE",
      `snapshot format ${
        bytes[MAGIC_PREFIX.length]
      } is not supported (this build reads format ${SNAPSHOT_FORMAT})`,
    );
  }
  if (bytes.length < PREFIX_BYTES) {
    throw new SandboxError("SNAPSHOT_CORRUPT", `snapshot truncated: ${bytes.length} bytes`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = view.getUint32(MAGIC.length + DIGEST_BYTES, true);
  if (PREFIX_BYTES + headerLength > bytes.length) {
    throw new SandboxError(
      "SNAPSHOT_CORRUPT",
      `snapshot truncated: a ${headerLength}-byte header in ${bytes.length} bytes`,
    );
  }
  const signed = bytes.subarray(MAGIC.length + DIGEST_BYTES);
  const digest = bytes.subarray(MAGIC.length, MAGIC.length + DIGEST_BYTES);
  const headerText = bytes.subarray(PREFIX_BYTES, PREFIX_BYTES + headerLength);
  const key = pickKey(options.key, headerText);
  if (!await verifyDigest(signed, digest, key)) {
    throw new SandboxError("SNAPSHOT_CORRUPT", digestMismatch(headerText, key));
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerText));
  } catch (e) {
    throw new SandboxError("SNAPSHOT_CORRUPT", "snapshot header is not JSON", { cause: e });
  }
  const header = validateHeader(parsed);
  if (header.keyId !== (key?.id ?? null)) {
    throw new SandboxError(
      "SNAPSHOT_CORRUPT",
      `snapshot names key ${JSON.stringify(header.keyId)}, expected ` +
        JSON.stringify(key?.id ?? null),
    );
  }
  const body = bytes.subarray(PREFIX_BYTES + headerLength);
  return { header, body: key ? await decrypt(key, headerText, body) : body };
}

/** The key of a ring that the (not yet verified) header names; else the ring's first. */
function pickKey(keys: SnapshotKeys | undefined, headerText: Uint8Array): SnapshotKey | undefined {
  if (!keys) return undefined;
  if (!Array.isArray(keys)) return keys as SnapshotKey;
  const ring = keys as readonly SnapshotKey[];
  const named = unverifiedKeyId(headerText);
  return ring.find((k) => k.id === named) ?? ring[0];
}

function unverifiedKeyId(headerText: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(headerText))?.keyId;
  } catch {
    return undefined;
  }
}

// ---- encryption --------------------------------------------------------------------------

/** An HMAC key and an AES-256-GCM key derived from one operator key for one purpose. */
export interface DerivedKeys {
  mac: CryptoKey;
  aes: CryptoKey;
}

/** The HKDF `info` of each derived key: snapshots and the journal never share a key. */
const KEY_INFO = {
  snapshot: { mac: "quickjs snapshot hmac", aes: "quickjs snapshot aes-256-gcm" },
  journal: { mac: "quickjs journal iv", aes: "quickjs journal aes-256-gcm" },
} as const;

const derived = new WeakMap<object, Map<keyof typeof KEY_INFO, Promise<DerivedKeys>>>();

/**
 * The HMAC and AES-GCM keys of an operator key for snapshots or for the journal
 * (HKDF-SHA-256, one `info` each), cached per key.
 */
export function derivedKeys(
  key: SnapshotKey,
  purpose: keyof typeof KEY_INFO = "snapshot",
): Promise<DerivedKeys> {
  let byPurpose = derived.get(key.secret);
  if (!byPurpose) derived.set(key.secret, byPurpose = new Map());
  let keys = byPurpose.get(purpose);
  if (!keys) {
    keys = (async () => {
      const base = key.secret instanceof CryptoKey ? key.secret : await crypto.subtle.importKey(
        "raw",
        key.secret as Uint8Array<ArrayBuffer>,
        "HKDF",
        false,
        ["deriveKey"],
      );
      const derive = (
        info: string,
        algorithm: HmacImportParams | AesKeyGenParams,
        usage: KeyUsage[],
      ) =>
        crypto.subtle.deriveKey(
          {
            name: "HKDF",
            hash: "SHA-256",
            salt: new Uint8Array(0),
            info: new TextEncoder().encode(info),
          },
          base,
          algorithm,
          false,
          usage,
        );
      const info = KEY_INFO[purpose];
      return {
        mac: await derive(info.mac, { name: "HMAC", hash: "SHA-256", length: 256 }, [
          "sign",
          "verify",
        ]),
        aes: await derive(info.aes, { name: "AES-GCM", length: 256 }, ["encrypt", "decrypt"]),
      };
    })();
    byPurpose.set(purpose, keys);
  }
  return keys;
}

async function encrypt(
  key: SnapshotKey,
  headerBytes: Uint8Array,
  body: Uint8Array,
): Promise<Uint8Array> {
  const { mac, aes } = await derivedKeys(key);
  const seed = new Uint8Array(headerBytes.length + body.length);
  seed.set(headerBytes, 0);
  seed.set(body, headerBytes.length);
  const iv = new Uint8Array(await crypto.subtle.sign("HMAC", mac, seed)).slice(0, IV_BYTES);
  const sealed = new Uint8Array(
    await crypto.subtle.encrypt(
      { name: "AES-GCM", iv, additionalData: headerBytes as Uint8Array<ArrayBuffer> },
      aes,
      body as Uint8Array<ArrayBuffer>,
    ),
  );
  const out = new Uint8Array(IV_BYTES + sealed.length);
  out.set(iv, 0);
  out.set(sealed, IV_BYTES);
  return out;
}

async function decrypt(
  key: SnapshotKey,
  headerBytes: Uint8Array,
  body: Uint8Array,
): Promise<Uint8Array> {
  const { aes } = await derivedKeys(key);
  try {
    return new Uint8Array(
      await crypto.subtle.decrypt(
        {
          name: "AES-GCM",
          iv: body.slice(0, IV_BYTES),
          additionalData: headerBytes.slice() as Uint8Array<ArrayBuffer>,
        },
        aes,
        body.slice(IV_BYTES),
      ),
    );
  } catch (e) {
    throw new SandboxError(
      "SNAPSHOT_CORRUPT",
      `snapshot body does not decrypt with key ${JSON.stringify(key.id)}`,
      { cause: e },
    );
  }
}

// ---- digests -----------------------------------------------------------------------------

async function digestOf(bytes: Uint8Array, key: SnapshotKey | undefined): Promise<Uint8Array> {
  const data = bytes as Uint8Array<ArrayBuffer>;
  const out = key
    ? await crypto.subtle.sign("HMAC", (await derivedKeys(key)).mac, data)
    : await crypto.subtle.digest("SHA-256", data);
  return new Uint8Array(out);
}

async function verifyDigest(
  bytes: Uint8Array,
  digest: Uint8Array,
  key: SnapshotKey | undefined,
): Promise<boolean> {
  if (key) {
    return await crypto.subtle.verify(
      "HMAC",
      (await derivedKeys(key)).mac,
      digest as Uint8Array<ArrayBuffer>,
      bytes as Uint8Array<ArrayBuffer>,
    );
  }
  const expected = await digestOf(bytes, undefined);
  return expected.every((b, i) => digest[i] === b);
}

/** Why the digest failed, as far as the unverified header can tell. */
function digestMismatch(headerText: Uint8Array, key: SnapshotKey | undefined): string {
  let keyId: unknown;
  try {
    keyId = JSON.parse(new TextDecoder().decode(headerText))?.keyId;
  } catch {
    keyId = undefined;
  }
  const expected = key ? `key ${JSON.stringify(key.id)}` : "no key";
  if (typeof keyId === "string" || keyId === null) {
    const made = keyId === null ? "no key" : `key ${JSON.stringify(keyId)}`;
    if (made !== expected) {
      return `snapshot checksum mismatch: it says it was made with ${made}, this restore uses ${expected}`;
    }
  }
  return `snapshot checksum mismatch: the bytes are damaged, or were signed with another secret (${expected})`;
}
