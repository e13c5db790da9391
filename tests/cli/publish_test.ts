/**
 * scripts/publish.ts and scripts/lib/publish_files.ts: task files become task versions, a
 * version only when something changed, and an invalid file publishes nothing. The module
 * runs on every database; the real process needs a server (a subprocess cannot share an
 * in-memory PGlite).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { testGroup } from "../support/groups.ts";
import { runScript } from "../support/cli.ts";
import type { TestDb } from "../support/db.ts";
import { checkTaskFiles, publishTaskFiles } from "../../scripts/lib/publish_files.ts";

const { test } = testGroup("cli_publish");
const SUBPROCESS = "runs the CLI as a subprocess, which cannot open the tests' in-memory PGlite";

let counter = 0;
/** A temp directory of task files named uniquely for this test: { base name: code }. */
async function taskDir(files: Record<string, string>): Promise<{ dir: string; names: string[] }> {
  const dir = await Deno.makeTempDir({ prefix: "publish-test-" });
  const suffix = `${Date.now().toString(36)}_${++counter}`;
  const names: string[] = [];
  for (const [base, code] of Object.entries(files)) {
    names.push(`${base}_${suffix}`);
    await Deno.writeTextFile(join(dir, `${base}_${suffix}.js`), code);
  }
  return { dir, names };
}

const GREET = `/**
 * Says hello.
 * @limits {"memoryBytes": 16777216}
 */
export default async function (input) { return "hello " + input.name; }
`;
const ADD = `export default async function (input) { return input.a + input.b; }\n`;

async function versions(db: TestDb, name: string): Promise<number[]> {
  const rows = await db.query<{ version: number }>(
    `select v.version from quickjs.task_versions v join quickjs.tasks t on t.id = v.task_id
     where t.name = $1 order by v.version`,
    [name],
  );
  return rows.map((r) => r.version);
}

test("publishTaskFiles publishes both files of a directory, then reports them unchanged, then a new version for changed code", async (db) => {
  const { dir, names } = await taskDir({ greet: GREET, add: ADD });
  const first = await publishTaskFiles(db.store, dir);
  assert.ok(first.ok);
  assert.deepEqual(
    first.published.map((p) => [p.name, p.version, p.changed]).sort(),
    names.map((n) => [n, 1, true]).sort(),
  );
  const [row] = await db.query<{ limits: Record<string, number>; description: string }>(
    `select v.limits, t.description from quickjs.task_versions v
     join quickjs.tasks t on t.id = v.task_id where t.name = $1`,
    [names[0]],
  );
  assert.deepEqual(row!.limits, { memoryBytes: 16777216 });
  assert.equal(row!.description, "Says hello.");

  const again = await publishTaskFiles(db.store, dir);
  assert.ok(again.ok);
  assert.deepEqual(again.published.map((p) => [p.version, p.changed]), [[1, false], [1, false]]);

  await Deno.writeTextFile(join(dir, `${names[1]}.js`), ADD.replace("a + input.b", "b + input.a"));
  const changed = await publishTaskFiles(db.store, dir);
  assert.ok(changed.ok);
  const byName = new Map(changed.published.map((p) => [p.name, p]));
  assert.deepEqual([byName.get(names[0]!)!.version, byName.get(names[0]!)!.changed], [1, false]);
  assert.deepEqual([byName.get(names[1]!)!.version, byName.get(names[1]!)!.changed], [2, true]);
  assert.deepEqual(await versions(db, names[1]!), [1, 2]);
});

test("a directory with a bad @limits publishes nothing and names the file", async (db) => {
  const { dir, names } = await taskDir({
    fine: ADD,
    huge: `/**\n * @limits {"memoryBytes": 5}\n */\nexport default async () => 1;\n`,
    unknown: `/**\n * @limits {"memoryMegabytes": 5}\n */\nexport default async () => 1;\n`,
    broken: `/**\n * @limits {memoryBytes: 5}\n */\nexport default async () => 1;\n`,
  });
  const outcome = await publishTaskFiles(db.store, dir);
  assert.equal(outcome.ok, false);
  assert.ok(!outcome.ok);
  const problems = new Map(outcome.problems.map((p) => [p.path, p.message]));
  assert.equal(problems.size, 3);
  const byBase = Object.fromEntries(names.map((n) => [n.split("_")[0]!, n]));
  const of = (base: string) => problems.get(join(dir, `${byBase[base]}.js`)) ?? "";
  assert.match(of("huge"), /huge_.*\.js: bad @limits: limit memoryBytes must be an integer/);
  assert.match(of("unknown"), /unknown_.*\.js: bad @limits: unknown limit memoryMegabytes/);
  assert.match(of("broken"), /broken_.*\.js: @limits must be JSON/);
  assert.deepEqual(await versions(db, byBase.fine!), [], "the valid file was not published either");
});

test("checkTaskFiles names a missing path and a directory without task files", async () => {
  const missing = await checkTaskFiles("/nonexistent/tasks-dir");
  assert.equal(missing.problems.length, 1);
  assert.match(missing.problems[0]!.message, /cannot read \/nonexistent\/tasks-dir/);
  const empty = await Deno.makeTempDir();
  const none = await checkTaskFiles(empty);
  assert.match(none.problems[0]!.message, /no task files/);
  const { dir } = await taskDir({ a: ADD });
  const twice = join(dir, "b.js");
  const name = (await checkTaskFiles(dir)).files[0]!.name;
  await Deno.writeTextFile(twice, `/**\n * @task ${name}\n */\n${ADD}`);
  const duplicate = await checkTaskFiles(dir);
  assert.match(duplicate.problems[0]!.message, new RegExp(`task ${name} is also defined by`));
});

test("publish without a path is bad usage (exit 2)", async () => {
  const r = await runScript("publish.ts", []);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /usage: publish <file-or-dir>/);
});

test(
  "deno task publish (real process) publishes a directory, reports unchanged, then a new version",
  async (db) => {
    const { dir, names } = await taskDir({ greet: GREET, add: ADD });
    const first = await runScript("publish.ts", [dir, "--db", db.url!, "--json"]);
    assert.equal(first.code, 0, first.stderr);
    const published =
      (first.json!.published as { name: string; version: number; changed: boolean }[])
        .map((p) => [p.name, p.version, p.changed]).sort();
    assert.deepEqual(published, names.map((n) => [n, 1, true]).sort());

    const human = await runScript("publish.ts", [dir, "--db", db.url!]);
    assert.equal(human.code, 0, human.stderr);
    const lines = human.stdout.trim().split("\n");
    assert.match(lines[0]!, /^NAME\s+VERSION\s+STATUS\s+FILE$/);
    for (const name of names) {
      assert.ok(
        lines.some((l) =>
          new RegExp(`^${name}\\s+v1\\s+unchanged\\s+${dir}/${name}\\.js$`).test(l)
        ),
        `a row for ${name}:\n${human.stdout}`,
      );
    }
    assert.match(human.stdout, /0 changed, 2 unchanged/);

    await Deno.writeTextFile(join(dir, `${names[0]}.js`), GREET.replace("hello ", "hi "));
    const changed = await runScript("publish.ts", [dir, "--db", db.url!, "--json"]);
    assert.equal(changed.code, 0, changed.stderr);
    const greet = (changed.json!.published as { name: string; version: number; changed: boolean }[])
      .find((p) => p.name === names[0]);
    assert.deepEqual([greet?.version, greet?.changed], [2, true]);
  },
  { serverOnly: SUBPROCESS },
);

test("deno task publish (real process) exits 1 naming a file with a bad @limits", async (db) => {
  const { dir, names } = await taskDir({
    ok: ADD,
    bad: `/**\n * @limits {"stackBytes": 1}\n */\nexport default async () => 1;\n`,
  });
  const r = await runScript("publish.ts", [dir, "--db", db.url!]);
  assert.equal(r.code, 1, r.stdout);
  assert.ok(r.stderr.includes(join(dir, `${names[1]}.js`)), r.stderr);
  assert.match(r.stderr, /bad @limits: limit stackBytes/);
  assert.match(r.stderr, /nothing was published/);
  assert.deepEqual(await versions(db, names[0]!), []);
}, { serverOnly: SUBPROCESS });
