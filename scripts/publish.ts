#!/usr/bin/env -S deno run -A
/**
 * Publishes task files: one .js file per task (name from the file or @task, limits from
 * @limits, allowed services from @tools). A task gets a new version only when its code,
 * limits or tools changed. Every file is checked before anything is published.
 *
 *   deno task publish examples/tasks            a directory of *.js / *.mjs files
 *   deno task publish my_task.js --db postgres://…
 *   --db URL   postgres://… | pglite | pglite:<dir>  (default: DATABASE_URL, SUPABASE_DB_URL,
 *              else an in-memory PGlite, which is gone when the command ends)
 *   --json     one JSON object: { published: [{ name, version, changed, path, … }] } or
 *              { problems: [{ path, message }] }
 *
 * Exit code: 0 when every file was published, 1 when a file is invalid or the database
 * refused, 2 on bad usage.
 */
import { parseArgs } from "node:util";
import { openStore } from "./lib/open_store.ts";
import { checkTaskFiles, publishTaskFiles, type TaskFileProblem } from "./lib/publish_files.ts";
import { table } from "./lib/format.ts";

const USAGE = "usage: publish <file-or-dir> [--db URL] [--json]";

export async function main(args: string[] = Deno.args): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        db: { type: "string" },
        json: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (e) {
    console.error(`publish: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (positionals.length !== 1) {
    console.error(USAGE);
    return 2;
  }
  const path = positionals[0]!;
  const refuse = (problems: TaskFileProblem[]) => {
    if (values.json) console.log(JSON.stringify({ ok: false, problems }));
    for (const problem of problems) console.error(`publish: ${problem.message}`);
    console.error("publish: nothing was published");
    return 1;
  };
  // check the files before opening the database (PGlite takes seconds to start)
  const { problems } = await checkTaskFiles(path);
  if (problems.length) return refuse(problems);
  const store = await openStore(values.db);
  try {
    const outcome = await publishTaskFiles(store, path);
    if (!outcome.ok) return refuse(outcome.problems);
    const published = outcome.published;
    if (values.json) {
      console.log(JSON.stringify({ ok: true, database: store.description, published }));
      return 0;
    }
    const rows = published.map((p) => [
      p.name,
      `v${p.version}`,
      p.changed ? "changed" : "unchanged",
      p.path,
    ]);
    for (const line of table(["name", "version", "status", "file"], rows)) console.log(line);
    const changed = published.filter((p) => p.changed).length;
    console.log(
      `\n${published.length} task(s) in ${store.description}: ${changed} changed, ` +
        `${published.length - changed} unchanged`,
    );
    return 0;
  } catch (e) {
    console.error(`publish: ${(e as Error).message}`);
    return 1;
  } finally {
    await store.close();
  }
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (e) {
    console.error(`publish: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
