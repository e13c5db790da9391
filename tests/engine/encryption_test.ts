/**
 * Snapshots at rest with an operator key (QUICKJS_ENCRYPTION_KEY): the heap is encrypted,
 * a worker without the key cannot restore it, and a rotated ring still reads snapshots made
 * with an older key while writing new ones with the first.
 */
import assert from "node:assert/strict";
import { dbTests, type TestDb } from "../support/db.ts";
import { harness, runToEnd } from "../support/engine_harness.ts";
import { invokeAndCrash, invokeOnce, startWith } from "../support/engine_scenarios.ts";
import {
  type Json,
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

test("a worker whose ring lacks the key of a journal entry fails the run JOURNAL_UNREADABLE instead of running the call again", async (db) => {
  const crash = new AbortController();
  let calls = 0;
  const tool = (method: string[]) => {
    calls++;
    if (method[0] === "second") {
      crash.abort();
      return new Promise<never>(() => {});
    }
    return "one";
  };
  const writer = harness(db.store, { snapshotKeys: [key("k1")], custom: { effects: tool } });
  const id = await startWith(
    writer,
    `export default async function () {
      await tools.effects.first();
      return await tools.effects.second();
    }`,
  );
  await invokeAndCrash(writer, id, crash); // no snapshot: only the journal holds call 1
  const other = harness(db.store, {
    snapshotKeys: [key("k2")],
    clock: writer.clock,
    custom: { effects: tool },
  });
  const run = await runToEnd(other, id);
  assert.equal(run.status, "failed");
  assert.equal(run.error?.code, "JOURNAL_UNREADABLE");
  assert.match(run.error!.message, /call 1 \(sealed with key k1\)/);
  assert.equal(calls, 2, "neither call ran again");
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

// ---- the journal's payloads ------------------------------------------------------------------

const JOURNAL_MARKER = "journal-marker-5b1e0d7c";

/** Every text quickjs.calls holds for a run. */
async function journalText(db: TestDb, runId: string): Promise<string> {
  const [row] = await db.query<{ text: string }>(
    "select coalesce(jsonb_agg(to_jsonb(c))::text, '') as text from quickjs.calls c where run_id = $1",
    [runId],
  );
  return row!.text;
}

test("with a key a database reader sees no call argument, result or error of the journal in plain text", async (db) => {
  const k1 = key("k1");
  const h = harness(db.store, {
    snapshotKeys: [k1],
    custom: {
      echo: (_m, args) => ({ echoed: args[0]! }),
      refuse: (_m, args) => {
        throw Object.assign(new Error(`refused ${String(args[0])}`), { code: "SERVICE_ERROR" });
      },
    },
  });
  const id = await startWith(
    h,
    `export default async function () {
      const a = await tools.echo.call(${JSON.stringify(JOURNAL_MARKER + "-arg")});
      let e;
      try { await tools.refuse.call(${
      JSON.stringify(JOURNAL_MARKER + "-err")
    }); } catch (x) { e = x.message; }
      await sleep("1 hour"); // suspended and restored: the restored run reads the journal back
      const b = await tools.echo.call(a.echoed + "-again");
      return { a, b, e };
    }`,
  );
  assert.equal((await invokeOnce(h, id)).status, "suspended");
  const run = await runToEnd(h, id);
  assert.equal(run.status, "completed", JSON.stringify(run.error));
  assert.deepEqual(run.result, {
    a: { echoed: `${JOURNAL_MARKER}-arg` },
    b: { echoed: `${JOURNAL_MARKER}-arg-again` },
    e: `refused ${JOURNAL_MARKER}-err`,
  });
  const text = await journalText(db, id);
  assert.ok(!text.includes(JOURNAL_MARKER), "no payload of quickjs.calls is plain text");
  const raw = (await db.store.listCalls(id)).find((c) => c.service === "refuse")!;
  assert.equal((raw.error as unknown as { $sealed: string }).$sealed, "k1");
  assert.equal(raw.error!.code, "SERVICE_ERROR", "an error's code stays searchable");
  // the engine's store opens what it sealed
  const opened = (await h.engine.store.listCalls(id)).find((c) => c.service === "echo")!;
  assert.deepEqual(opened.args, [`${JOURNAL_MARKER}-arg`]);
  assert.deepEqual(opened.result, { echoed: `${JOURNAL_MARKER}-arg` });
});

test("a sealed call journaled with the old key before a crash is still replayed, not run again, by a worker with the rotated ring", async (db) => {
  const k1 = key("old");
  const k2 = key("new");
  const count: Record<string, number> = {};
  const crash = new AbortController();
  const tool = (method: string[], args: Json[]) => {
    const name = method.join(".");
    count[name] = (count[name] ?? 0) + 1;
    if (name === "second" && !crash.signal.aborted) {
      crash.abort(); // the process dies while this call is in flight
      return new Promise<never>(() => {});
    }
    return `${name}:${String(args[0])}`;
  };
  const before = harness(db.store, { snapshotKeys: [k1], custom: { effects: tool } });
  const id = await startWith(
    before,
    `export default async function () {
      const one = await tools.effects.first(${JSON.stringify(JOURNAL_MARKER)});
      const two = await tools.effects.second(one);
      return [one, two];
    }`,
  );
  await invokeAndCrash(before, id, crash);
  // rotated: the new key writes, the old one stays in the ring to read what it sealed
  const after = harness(db.store, {
    snapshotKeys: [k2, k1],
    clock: before.clock,
    custom: { effects: tool },
  });
  const run = await runToEnd(after, id);
  assert.equal(run.status, "completed", JSON.stringify(run.error));
  assert.deepEqual(run.result, [
    `first:${JOURNAL_MARKER}`,
    `second:first:${JOURNAL_MARKER}`,
  ]);
  assert.equal(count.first, 1, "call 1 came from the journal: its sealed arguments matched");
  assert.equal(count.second, 2, "call 2 was in flight at the crash: it ran again");
  const calls = await db.store.listCalls(id);
  const keyOf = (v: unknown) => (v as { $sealed?: string } | undefined)?.$sealed;
  assert.deepEqual(calls.map((c) => [c.seq, keyOf(c.args[0]), keyOf(c.result)]), [
    [1, "old", "old"],
    [2, "old", "old"],
  ], "a re-issued call keeps the key its entry was sealed with");
  assert.ok(!(await journalText(db, id)).includes(JOURNAL_MARKER));
});
