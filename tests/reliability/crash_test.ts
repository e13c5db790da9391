/**
 * Real processes, really killed (SIGKILL) in the middle of a run. Named after what the
 * system this replaces got wrong: a task is never stuck in "running" (the lease expires
 * and another process continues it from its last snapshot), a completed call is never
 * executed twice (its result comes from the journal), and a call in flight when the
 * process died runs again with the same idempotency key.
 */
import assert from "node:assert/strict";
import { dbTests, type TestDb } from "../support/db.ts";
import { ROOT } from "../support/cli.ts";

const { test } = dbTests("reliability_crash");
const TOOLS = "tests/fixtures/reliability/tools.ts";
const HOUR = 3600 * 1000;

/** One invocation in a new process: `run-task --step` claims one due run and runs it. */
function step(db: TestDb, clockOffsetMs: number, env: Record<string, string>) {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--frozen",
      `${ROOT}scripts/run-task.ts`,
      "--step",
      "--db",
      db.url!,
      "--clock-offset",
      String(clockOffsetMs),
      "--tools",
      TOOLS,
    ],
    cwd: ROOT,
    env,
    stdout: "piped",
    stderr: "piped",
  });
}

async function waitFor(what: string, check: () => Promise<boolean>, ms = 30_000) {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test("a process killed mid-call leaves no run stuck: another continues from the snapshot, completed calls are not repeated, the one in flight runs again with the same key", async (db) => {
  if (db.kind !== "postgres") {
    console.log(
      "[tests] skipped: separate processes need a database server, not an in-memory PGlite",
    );
    return;
  }
  const log = await Deno.makeTempFile({ prefix: "crash-log-" });
  const env = { CRASH_LOG: log };
  const code = await Deno.readTextFile(`${ROOT}tests/fixtures/reliability/crashy.js`);
  await db.store.publishTask({ name: "crashy", code });
  const run = await db.store.enqueueRun({ task: "crashy" });
  const status = async () =>
    (await db.query<{ status: string }>("select status::text from quickjs.runs where id = $1", [
      run.id,
    ]))[0]!.status;

  // 1. first process: call "first", then the one-hour sleep saves the VM
  const first = await step(db, 0, env).output();
  assert.ok(first.success, new TextDecoder().decode(first.stderr));
  assert.equal(await status(), "suspended");

  // 2. second process, two hours later: restores, calls "second", starts "third" and dies
  const second = step(db, 2 * HOUR, { ...env, CRASH_HANG: "1" }).spawn();
  await waitFor(
    "the slow call to start",
    async () => (await Deno.readTextFile(log)).includes("start third"),
  );
  second.kill("SIGKILL");
  const killed = await second.output(); // reads its pipes to the end, so they close
  assert.equal(killed.success, false);
  assert.equal(await status(), "running", "the dead process still holds the lease");
  const journal = await db.store.listCalls(run.id);
  assert.deepEqual(
    journal.map((c) => [c.seq, c.service, c.path.join("."), c.status, c.attempts]),
    [
      [1, "effects", "hit", "succeeded", 1],
      [2, "sleep", "", "succeeded", 0],
      [3, "effects", "hit", "succeeded", 1],
      [4, "effects", "slow", "started", 1],
    ],
  );

  // 3. a third process after the lease ran out: requeues, restores the snapshot taken
  // before "second", delivers "second" from the journal, runs "third" again
  const third = await step(db, 2 * HOUR + 60_000, env).output();
  assert.ok(third.success, new TextDecoder().decode(third.stderr));
  const done = (await db.store.getRun(run.id))!;
  assert.equal(done.status, "completed");
  assert.deepEqual(done.result, { a: "first ok", b: "second ok", c: "third done" });

  const lines = (await Deno.readTextFile(log)).trim().split("\n");
  const keyOf = (seq: number) => `${run.id}:${seq}`;
  assert.deepEqual(lines, [
    `hit first ${keyOf(1)} 1`,
    `hit second ${keyOf(3)} 1`,
    `start third ${keyOf(4)} 1`,
    `start third ${keyOf(4)} 2`,
  ], "each completed call ran once; the one in flight ran again with the same key");
  const slow = (await db.store.listCalls(run.id)).find((c) => c.seq === 4)!;
  assert.equal(slow.status, "succeeded");
  assert.equal(slow.attempts, 2);
  assert.ok(
    done.logs?.some((l) => l.level === "system" && /lease .* expired/.test(l.message)),
    "the run's log says its lease expired",
  );
  await Deno.remove(log);
});

test("a process killed before its first snapshot: the run starts again from the top and completed calls come from the journal", async (db) => {
  if (db.kind !== "postgres") {
    console.log(
      "[tests] skipped: separate processes need a database server, not an in-memory PGlite",
    );
    return;
  }
  const log = await Deno.makeTempFile({ prefix: "crash-log-" });
  await db.store.publishTask({
    name: "crashy_early",
    code: `export default async function () {
      const a = await tools.effects.hit("one");
      const b = await tools.effects.slow("two");
      return [a, b];
    }`,
  });
  const run = await db.store.enqueueRun({ task: "crashy_early" });
  const child = step(db, 0, { CRASH_LOG: log, CRASH_HANG: "1" }).spawn();
  await waitFor(
    "the slow call to start",
    async () => (await Deno.readTextFile(log)).includes("start two"),
  );
  child.kill("SIGKILL");
  await child.output(); // reads its pipes to the end, so they close
  const again = await step(db, 60_000, { CRASH_LOG: log }).output();
  assert.ok(again.success, new TextDecoder().decode(again.stderr));
  const done = (await db.store.getRun(run.id))!;
  assert.equal(done.status, "completed");
  assert.deepEqual(done.result, ["one ok", "two done"]);
  assert.deepEqual((await Deno.readTextFile(log)).trim().split("\n"), [
    `hit one ${run.id}:1 1`,
    `start two ${run.id}:2 1`,
    `start two ${run.id}:2 2`,
  ]);
  assert.equal(done.invocations, 2, "the killed invocation and the one that finished");
  assert.equal(done.attempts, 1, "a crash is not a new attempt of the run");
  await Deno.remove(log);
});
