/**
 * The snapshot's byte format on its own (sandbox/snapshot_codec.ts): no wasm, no VM. A
 * header of the wrong shape, a bad magic, a short file or a digest that does not match
 * fail at once with SNAPSHOT_CORRUPT; another format with SNAPSHOT_INCOMPATIBLE; a keyed
 * snapshot verifies only with its key.
 */
import assert from "node:assert/strict";
import {
  decodeSnapshot,
  DEFAULT_LIMITS,
  encodeSnapshot,
  SandboxError,
  SNAPSHOT_FORMAT,
  type SnapshotHeader,
  type SnapshotKey,
} from "../../supabase/functions/_shared/quickjs/mod.ts";

const BODY = new Uint8Array([0x1f, 0x8b, 0, 1, 2, 3, 255, 254, 0, 0, 7]);

function header(change: Partial<SnapshotHeader> = {}): SnapshotHeader {
  return {
    format: SNAPSHOT_FORMAT,
    runId: "run-1",
    keyId: null,
    variant: "asyncify",
    packageVersion: "0.32.0",
    wasmSha256: "ab".repeat(32),
    baseline: "asyncify-abababababab-0123",
    seedWords: [[1_050_000, 0xdeadbeef], [1_050_004, 7]],
    memoryBytes: 128 * 65536,
    stackPointer: 5_242_880,
    heapBreak: 5_600_000,
    pointers: { runtime: 5_300_000, context: 5_310_000, global: 5_320_000, handles: [1, 2, 3] },
    pageSize: 4096,
    pageCount: 22,
    bodyBytes: 22 * 4100,
    codec: "gzip",
    parkedCalls: [1, 3],
    lastCallId: 3,
    limits: { ...DEFAULT_LIMITS },
    createdAt: "2026-12-01T00:00:00.000Z",
    ...change,
  };
}

const KEY: SnapshotKey = {
  id: "k1",
  secret: new TextEncoder().encode("a secret of 32 bytes, roughly.."),
};
const OTHER_KEY: SnapshotKey = { id: "k1", secret: new TextEncoder().encode("another secret") };

/** Bytes in the snapshot layout around any header JSON, with a valid (unkeyed) digest. */
async function rawSnapshot(headerJson: string, body = BODY, format = SNAPSHOT_FORMAT) {
  const json = new TextEncoder().encode(headerJson);
  const out = new Uint8Array(44 + json.length + body.length);
  out.set([0x51, 0x4a, 0x53, 0x4e, 0x41, 0x50, 0x00, format]);
  new DataView(out.buffer).setUint32(40, json.length, true);
  out.set(json, 44);
  out.set(body, 44 + json.length);
  out.set(new Uint8Array(await crypto.subtle.digest("SHA-256", out.subarray(40))), 8);
  return out;
}

async function rejectsWith(bytes: Uint8Array, code: string, message: RegExp, key?: SnapshotKey) {
  await assert.rejects(decodeSnapshot(bytes, { key }), (e: unknown) => {
    assert.ok(e instanceof SandboxError, `not a SandboxError: ${e}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, message);
    return true;
  });
}

Deno.test("encodeSnapshot and decodeSnapshot round-trip a header and a body exactly", async () => {
  const bytes = await encodeSnapshot(header(), BODY);
  const decoded = await decodeSnapshot(bytes);
  assert.deepEqual(decoded.header, header());
  assert.deepEqual(decoded.body, BODY);
  assert.deepEqual(await encodeSnapshot(decoded.header, decoded.body), bytes);
});

Deno.test("equal headers encode to equal bytes whatever their key order", async () => {
  const shuffled = Object.fromEntries(Object.entries(header()).reverse()) as SnapshotHeader;
  shuffled.limits = Object.fromEntries(
    Object.entries(DEFAULT_LIMITS).reverse(),
  ) as unknown as SnapshotHeader["limits"];
  assert.deepEqual(await encodeSnapshot(shuffled, BODY), await encodeSnapshot(header(), BODY));
});

Deno.test("bytes that are not a snapshot fail with SNAPSHOT_CORRUPT (bad magic)", async () => {
  await rejectsWith(new Uint8Array(0), "SNAPSHOT_CORRUPT", /bad magic/);
  await rejectsWith(new TextEncoder().encode("PK\x03\x04 a zip file"), "SNAPSHOT_CORRUPT", /magic/);
  const bytes = await encodeSnapshot(header(), BODY);
  bytes[0] = 0x52;
  await rejectsWith(bytes, "SNAPSHOT_CORRUPT", /bad magic/);
});

Deno.test("a snapshot cut short anywhere fails with SNAPSHOT_CORRUPT", async () => {
  const bytes = await encodeSnapshot(header(), BODY);
  for (const length of [8, 20, 43, 44, 100, bytes.length - BODY.length, bytes.length - 1]) {
    await rejectsWith(bytes.slice(0, length), "SNAPSHOT_CORRUPT", /truncated|checksum/);
  }
});

Deno.test("one changed byte in the header or the body fails the digest with SNAPSHOT_CORRUPT", async () => {
  const bytes = await encodeSnapshot(header(), BODY);
  for (const at of [10, 41, 60, bytes.length - 3]) {
    const damaged = bytes.slice();
    damaged[at]! ^= 0x04;
    await rejectsWith(damaged, "SNAPSHOT_CORRUPT", /checksum|truncated/);
  }
});

Deno.test("a header without wasmSha256 fails with SNAPSHOT_CORRUPT, not a TypeError", async () => {
  const { wasmSha256: _, ...rest } = header();
  await rejectsWith(
    await rawSnapshot(JSON.stringify(rest)),
    "SNAPSHOT_CORRUPT",
    /header\.wasmSha256 is not present/,
  );
});

Deno.test("every header field of the wrong type fails with SNAPSHOT_CORRUPT naming it", async () => {
  const cases: [string, unknown][] = [
    ["runId", 7],
    ["runId", ""],
    ["keyId", 1],
    ["variant", "debug"],
    ["wasmSha256", "not hex"],
    ["seedWords", [[1]]],
    ["seedWords", [[4, -1]]],
    ["memoryBytes", "1024"],
    ["pointers", { runtime: 1, context: 2, global: 3 }],
    ["pageCount", 1.5],
    ["codec", "zstd"],
    ["parkedCalls", [1, "2"]],
    ["lastCallId", null],
    ["limits", { ...DEFAULT_LIMITS, memoryBytes: "lots" }],
    ["limits", { memoryBytes: 1 }],
    ["createdAt", "yesterday"],
  ];
  for (const [field, value] of cases) {
    const bad = { ...header(), [field]: value };
    await rejectsWith(
      await rawSnapshot(JSON.stringify(bad)),
      "SNAPSHOT_CORRUPT",
      new RegExp(`header\\.${field}`),
    );
  }
  await rejectsWith(await rawSnapshot("[1, 2]"), "SNAPSHOT_CORRUPT", /header is not an object/);
  await rejectsWith(await rawSnapshot("{"), "SNAPSHOT_CORRUPT", /not JSON/);
  await rejectsWith(
    await rawSnapshot(JSON.stringify({ ...header(), extra: 1 })),
    "SNAPSHOT_CORRUPT",
    /header\.extra is not a known field/,
  );
});

Deno.test("a snapshot of another format fails with SNAPSHOT_INCOMPATIBLE", async () => {
  const json = JSON.stringify(header());
  await rejectsWith(await rawSnapshot(json, BODY, 1), "SNAPSHOT_INCOMPATIBLE", /format 1/);
  await rejectsWith(
    await rawSnapshot(JSON.stringify({ ...header(), format: 99 })),
    "SNAPSHOT_INCOMPATIBLE",
    /format 99/,
  );
});

Deno.test("a keyed snapshot decodes with its key, and with no other key or none", async () => {
  const keyed = await encodeSnapshot(header({ keyId: KEY.id }), BODY, { key: KEY });
  assert.equal((await decodeSnapshot(keyed, { key: KEY })).header.keyId, "k1");
  await rejectsWith(keyed, "SNAPSHOT_CORRUPT", /made with key "k1", this restore uses no key/);
  await rejectsWith(keyed, "SNAPSHOT_CORRUPT", /checksum mismatch/, OTHER_KEY);
  // the same secret under another id: the digest verifies, the id does not
  await rejectsWith(
    keyed,
    "SNAPSHOT_CORRUPT",
    /names key "k1", expected "k2"/,
    { ...KEY, id: "k2" },
  );
  // an unkeyed snapshot does not pass where a key is required
  const plain = await encodeSnapshot(header(), BODY);
  await rejectsWith(plain, "SNAPSHOT_CORRUPT", /made with no key, this restore uses key/, KEY);
  // a WebCrypto HKDF key works as well as raw bytes
  const cryptoKey = await crypto.subtle.importKey(
    "raw",
    KEY.secret as Uint8Array<ArrayBuffer>,
    "HKDF",
    false,
    ["deriveKey"],
  );
  const viaCryptoKey = await encodeSnapshot(header({ keyId: "k1" }), BODY, {
    key: { id: "k1", secret: cryptoKey },
  });
  assert.deepEqual(viaCryptoKey, keyed);
});

Deno.test("encodeSnapshot refuses a header whose keyId is not the key's", async () => {
  await assert.rejects(encodeSnapshot(header(), BODY, { key: KEY }), /keyId null is not the key's/);
  await assert.rejects(encodeSnapshot(header({ keyId: "k1" }), BODY), /keyId "k1"/);
});
