/**
 * Snapshots at rest with an operator key (QUICKJS_ENCRYPTION_KEY): the heap is encrypted,
 * a worker without the key cannot restore it, and a rotated ring still reads snapshots made
 * with an older key while writing new ones with the first.
 */
import assert from "node:assert/strict";
import { dbTests, type TestDb } from "../support/db.ts";
import { harness, runToEnd } from "../support/engine_harness.ts";
import { invokeOnce, startWith } from "../support/engine_scenarios.ts";
import {
  parseSnapshotKeys,
  readSnapshot,
  type SnapshotKey,
} from "../../supabase/functions/_shared/quickjs/mod.ts";

const { test } = dbTests("engine_encryption");

const HEAP_STRING = "heap-marker-7f3c9a1e-a-string-only-the-heap-holds";

/** Holds HEAP_STRING on its heap across a one-hour sleep. */
const TASK = `export default async function () {
  // 64 KiB of it: in pages past the boot image, which the body holds as they are (XOR 0)
  const kept = ["heap-marker-7f3c9a1e", "a-string-only-the-heap-holds"].join("-").repeat(1300);
  await sleep("1 hour");
  return kept.length;
}`;

function key(id: string): SnapshotKey {
  return { id, secret: crypto.getRandomValues(new Uint8Array(32)) };
}

async function snapshotBytes(db: TestDb, runId: string): Promise<Uint8Array> {
  const [row] = await db.query<{ bytes: Uint8Array }>(
    "select bytes from quickjs.snapshots where run_id = $1",
    [runId],
  );
  assert.ok(row, "the run has a snapshot");
  return row.bytes;
}

function holds(bytes: Uint8Array, text: string): boolean {
  // latin-1 view: QuickJS keeps an ASCII string as one byte per character
  let view = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    view += String.fromCharCode(...bytes.subarray(i, i + 8192));
  }
  return view.includes(text);
}

test("with a key the snapshot in quickjs.snapshots holds no plaintext of a heap string, and the header names the key", async (db) => {
  const k1 = key("k1");
  const h = harness(db.store, { snapshotKeys: [k1] });
  const id = await startWith(h, TASK);
  assert.equal((await invokeOnce(h, id)).status, "suspended");
  const bytes = await snapshotBytes(db, id);
  assert.ok(!holds(bytes, HEAP_STRING), "the heap string is not in the stored bytes");
  const { header } = await readSnapshot(bytes, { key: [k1] });
  assert.equal(header.keyId, "k1");
  // gzip alone would hide a repeated string too: the stored body is not even gzip without the key
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset).getUint32(40, true);
  const stored = bytes.subarray(44 + headerLength);
  const { gunzipSync } = await import("node:zlib");
  assert.throws(() => gunzipSync(stored));
  assert.ok(!holds(stored, "heap-marker"));
  // control: decrypted with the key, the same snapshot's body shows the string
  const { body } = await readSnapshot(bytes, { key: [k1] });
  assert.ok(holds(gunzipSync(body), HEAP_STRING), "the decrypted heap holds the string");
  const run = await runToEnd(h, id);
  assert.equal(run.result, HEAP_STRING.length * 1300);
});

test("a worker without the key (or with another) cannot restore: the run fails SNAPSHOT_CORRUPT", async (db) => {
  const writer = harness(db.store, { snapshotKeys: [key("k1")] });
  const id = await startWith(writer, TASK);
  await invokeOnce(writer, id);
  const none = harness(db.store, { snapshotKeys: [], clock: writer.clock });
  none.clock.jumpTo(new Date(none.clock.now().getTime() + 3_600_000));
  const run = await runToEnd(none, id);
  assert.equal(run.status, "failed");
  assert.equal(run.error?.code, "SNAPSHOT_CORRUPT");
  assert.match(run.error!.message, /made with key "k1", this restore uses no key/);

  const id2 = await startWith(writer, TASK);
  await invokeOnce(writer, id2);
  const wrong = harness(db.store, { snapshotKeys: [key("k1")], clock: writer.clock });
  wrong.clock.jumpTo(new Date(wrong.clock.now().getTime() + 3_600_000));
  const run2 = await runToEnd(wrong, id2);
  assert.equal(run2.error?.code, "SNAPSHOT_CORRUPT");
});

test("after a rotation (new key first, old key kept) a snapshot made with the old key restores, and the next is written with the new", async (db) => {
  const old = key("2026-11");
  const h = harness(db.store, { snapshotKeys: [old] });
  const id = await startWith(
    h,
    `export default async function () {
      await sleep("1 hour");
      await sleep("1 hour");
      return "done";
    }`,
  );
  await invokeOnce(h, id);
  assert.equal(
    (await readSnapshot(await snapshotBytes(db, id), { key: old })).header.keyId,
    "2026-11",
  );
  const fresh = key("2026-12");
  const rotated = harness(db.store, { snapshotKeys: [fresh, old], clock: h.clock });
  rotated.clock.jumpTo(new Date(rotated.clock.now().getTime() + 3_600_000));
  assert.equal((await invokeOnce(rotated, id)).status, "suspended");
  const again = await readSnapshot(await snapshotBytes(db, id), { key: [fresh, old] });
  assert.equal(again.header.keyId, "2026-12", "rewritten with the ring's first key");
  const run = await runToEnd(rotated, id);
  assert.equal(run.result, "done");
});

test("QUICKJS_ENCRYPTION_KEY parses as id:base64 lists and JSON maps, first key first, and refuses short keys", async () => {
  const a = btoa(String.fromCharCode(...new Uint8Array(32).fill(1)));
  const b = btoa(String.fromCharCode(...new Uint8Array(32).fill(2)));
  assert.deepEqual(parseSnapshotKeys(`new:${a}, old:${b}`).map((k) => k.id), ["new", "old"]);
  assert.deepEqual(
    parseSnapshotKeys(JSON.stringify({ new: a, old: b })).map((k) => k.id),
    ["new", "old"],
  );
  assert.throws(() => parseSnapshotKeys(`k:${btoa("short")}`), /5 bytes, not 32/);
  assert.throws(() => parseSnapshotKeys(a), /<id>:<base64>/);
  assert.deepEqual(parseSnapshotKeys(""), []);
  await Promise.resolve();
});
