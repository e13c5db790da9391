/**
 * The golden snapshot: a small real snapshot, committed under tests/fixtures/snapshots/
 * with its header as JSON, that must decode to that header and re-encode to the same
 * bytes, and must restore in this build. A change to the byte format therefore fails here
 * until it is made on purpose, and so does a change that leaves old snapshots unrestorable
 * (a new wasm, prelude or VM set-up):
 *
 *   1. bump SNAPSHOT_FORMAT (sandbox/snapshot_codec.ts) if the layout or the header changed;
 *   2. regenerate: UPDATE_GOLDEN=1 deno test -A --frozen tests/sandbox/snapshot_golden_test.ts
 *   3. commit the rewritten files in tests/fixtures/snapshots/.
 */
import assert from "node:assert/strict";
import { gunzipSync } from "node:zlib";
import {
  decodeSnapshot,
  encodeSnapshot,
  incompatibility,
  resolveLimits,
  restoreSnapshot,
  SNAPSHOT_FORMAT,
  type SnapshotHeader,
  type SnapshotKey,
  takeSnapshot,
  TaskVm,
} from "../../supabase/functions/_shared/quickjs/mod.ts";

const DIR = new URL("../fixtures/snapshots/", import.meta.url);
const TASK = new URL("small_task.js", DIR);
const PLAIN = new URL("small.qjsnap", DIR);
const KEYED = new URL("small.keyed.qjsnap", DIR);
const HEADER = new URL("small.header.json", DIR);

const RUN_ID = "golden-run";
const INPUT = { name: "golden" };
// the golden task's own limits, pinned: a change of the defaults is not a format change
const LIMITS = resolveLimits({ memoryBytes: 64 * 1024 * 1024 });
/** A fixed test key: the keyed sample checks the HMAC path byte for byte. */
const KEY: SnapshotKey = { id: "golden-key", secret: new TextEncoder().encode("golden secret") };

const REGENERATE =
  "UPDATE_GOLDEN=1 deno test -A --frozen tests/sandbox/snapshot_golden_test.ts, then commit " +
  "tests/fixtures/snapshots/";

/** A VM of the golden task, parked on its one call. */
async function parkedGoldenVm(): Promise<TaskVm> {
  const vm = await TaskVm.create({ limits: LIMITS });
  const state = vm.start(
    { code: await Deno.readTextFile(TASK), filename: "small_task.js" },
    INPUT,
    { runId: RUN_ID, task: "small_task", attempt: 1 },
  );
  assert.deepEqual(state, { kind: "parked", calls: [1] });
  return vm;
}

async function regenerate(): Promise<void> {
  using vm = await parkedGoldenVm();
  const { header, bytes } = await takeSnapshot(vm, { runId: RUN_ID });
  const { body } = await decodeSnapshot(bytes);
  const keyed = await encodeSnapshot({ ...header, keyId: KEY.id }, body, { key: KEY });
  await Deno.writeFile(PLAIN, bytes);
  await Deno.writeFile(KEYED, keyed);
  await Deno.writeTextFile(HEADER, JSON.stringify(header, null, 2) + "\n");
  console.log(
    `wrote ${PLAIN.pathname} (${bytes.length} bytes), ${KEYED.pathname}, ${HEADER.pathname}`,
  );
}

if (Deno.env.get("UPDATE_GOLDEN") === "1") await regenerate();

const expected = JSON.parse(await Deno.readTextFile(HEADER)) as SnapshotHeader;
const expectedKeyed = { ...expected, keyId: KEY.id };

/** Runs a check; a failure says the format changed and how to regenerate on purpose. */
async function golden(what: string, check: () => Promise<void>): Promise<void> {
  try {
    await check();
  } catch (e) {
    throw new Error(
      `${what}: the snapshot format changed (this code writes format ${SNAPSHOT_FORMAT}, ` +
        `the golden sample is format ${expected.format}) and tests/fixtures/snapshots/ was not ` +
        `regenerated. If the change is deliberate, bump SNAPSHOT_FORMAT when the layout or ` +
        `the header's fields changed, and run: ${REGENERATE}.\nCause: ${(e as Error).message}`,
      { cause: e },
    );
  }
}

Deno.test("the golden snapshot decodes to its committed header, byte for byte", async () => {
  const bytes = await Deno.readFile(PLAIN);
  await golden("decoding small.qjsnap", async () => {
    const { header, body } = await decodeSnapshot(bytes);
    assert.deepEqual(header, expected);
    // the body is what the header says it is: gzip of page numbers and pages
    assert.equal(gunzipSync(body).length, header.bodyBytes);
    assert.equal(header.bodyBytes, header.pageCount * (4 + header.pageSize));
  });
});

Deno.test("the golden snapshot re-encodes to identical bytes, keyed and unkeyed", async () => {
  for (
    const [file, key, header] of [[PLAIN, undefined, expected], [
      KEYED,
      KEY,
      expectedKeyed,
    ]] as const
  ) {
    const bytes = await Deno.readFile(file);
    await golden(`re-encoding ${file.pathname.split("/").pop()}`, async () => {
      const decoded = await decodeSnapshot(bytes, { key });
      assert.deepEqual(decoded.header, header);
      const again = await encodeSnapshot(decoded.header, decoded.body, { key });
      assert.equal(again.length, bytes.length, "length");
      assert.ok(again.every((b, i) => b === bytes[i]), "the bytes differ");
    });
  }
});

Deno.test("a snapshot taken now has the golden header's format and fields", async () => {
  using vm = await parkedGoldenVm();
  const { header } = await takeSnapshot(vm, { runId: RUN_ID });
  await golden("a fresh snapshot's header", () => {
    assert.equal(header.format, expected.format);
    assert.deepEqual(Object.keys(header).sort(), Object.keys(expected).sort());
    assert.deepEqual(Object.keys(header.pointers), Object.keys(expected.pointers));
    assert.deepEqual(Object.keys(header.limits).sort(), Object.keys(expected.limits).sort());
    return Promise.resolve();
  });
});

Deno.test("the golden snapshot restores in this process and finishes its task", async () => {
  // A new wasm, prelude or set-up makes every older snapshot SNAPSHOT_INCOMPATIBLE, the
  // golden one included: deliberate then, and the sample is regenerated. A clock, a
  // locale or a working directory must never do it (the seed-word fix came from here).
  const why = await incompatibility(expected);
  if (why !== undefined) {
    throw new Error(
      `the golden snapshot does not restore in this build: ${why}. If the build or the VM ` +
        `set-up changed on purpose (suspended runs then fail with SNAPSHOT_INCOMPATIBLE), ` +
        `run: ${REGENERATE}`,
    );
  }
  const { vm, header } = await restoreSnapshot(await Deno.readFile(KEYED), {
    runId: RUN_ID,
    limits: LIMITS,
    key: KEY,
  });
  using restored = vm;
  assert.deepEqual(header.parkedCalls, [1]);
  restored.settle(1, { ok: true, value: "reply" });
  const state = restored.run();
  assert.equal(state.kind, "done");
  const result = (state as unknown as { result: { seen: { name: string }; reply: string } })
    .result;
  assert.deepEqual([result.seen.name, result.reply], ["golden", "reply"]);
});
