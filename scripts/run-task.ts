#!/usr/bin/env -S deno run -A
/**
 * Runs one task file through the real engine on PGlite (or --db) and prints one JSON
 * object on its last line: { status, result, error, logs, suspensions, snapshotBytesMax }.
 * Sibling .js files are published too, so the task can start them as child tasks by name.
 *
 *   deno task run-task examples/tasks/hello.js --input '{"name":"Ada"}'
 *   --durable-all            every host call is durable: each await crosses a snapshot
 *   --restore-in-subprocess  every invocation (so every restore) runs in a new process
 *   --db URL                 postgres://… | pglite | pglite:<dir>   (default: in-memory PGlite)
 *   --tools module.ts        in-process tools: the module's default export, { name: fn }
 *   --real-time              wait for sleeps instead of moving a virtual clock to them
 *
 * Exit code: 0 when the run completed, 1 when it failed or was cancelled, 2 on bad usage.
 */
import { parseArgs } from "node:util";
import { dirname } from "node:path";
import {
  type Clock,
  type CustomTool,
  Engine,
  type InvocationResult,
  isFinal,
  type Json,
  type Store,
  ToolRegistry,
} from "../supabase/functions/_shared/quickjs/mod.ts";
import {
  publishTasks,
  readTaskFile,
  VirtualClock,
} from "../supabase/functions/_shared/quickjs/dev.ts";
import { openStore } from "./lib/open_store.ts";
import { loadToolsModule } from "./lib/tools_module.ts";

const USAGE =
  "usage: run-task <file.js> [--input JSON] [--durable-all] [--restore-in-subprocess] [--db URL] [--tools module.ts] [--real-time]";

interface Options {
  durableAll: boolean;
  toolsModule?: string;
}

function newEngine(
  store: Store,
  clock: Clock,
  options: Options,
  custom: Record<string, CustomTool>,
) {
  return new Engine({
    store,
    tools: new ToolRegistry(store, { custom }),
    workerId: `run-task-${Deno.pid}`,
    clock,
    durableAll: options.durableAll,
  });
}

/** `--step`: one invocation of one due run, in this (child) process. */
async function step(db: string, offsetMs: number, options: Options): Promise<void> {
  const store = await openStore(db);
  try {
    const engine = newEngine(
      store,
      new VirtualClock(offsetMs),
      options,
      await loadToolsModule(options.toolsModule),
    );
    const results = await engine.claimAndRun({ limit: 1 });
    console.log(JSON.stringify(results));
  } finally {
    await store.close();
  }
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      input: { type: "string" },
      "durable-all": { type: "boolean", default: false },
      "restore-in-subprocess": { type: "boolean", default: false },
      db: { type: "string" },
      tools: { type: "string" },
      "real-time": { type: "boolean", default: false },
      step: { type: "boolean", default: false },
      "clock-offset": { type: "string", default: "0" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const options: Options = { durableAll: values["durable-all"], toolsModule: values.tools };
  if (values.step) {
    await step(values.db!, Number(values["clock-offset"]), options);
    return 0;
  }
  const file = positionals[0];
  if (values.help || !file) {
    console.error(USAGE);
    return values.help ? 0 : 2;
  }
  let input: Json = null;
  if (values.input !== undefined) {
    try {
      input = JSON.parse(values.input);
    } catch {
      console.error(`--input is not JSON: ${values.input}`);
      return 2;
    }
  }
  const subprocess = values["restore-in-subprocess"];
  // A child process cannot open an in-memory database; PGlite then keeps a data
  // directory that parent and child take turns to open.
  let db = values.db ?? "pglite";
  if (subprocess && db === "pglite") {
    db = `pglite:${await Deno.makeTempDir({ prefix: "run-task-" })}`;
  }
  const sharedPglite = subprocess && db.startsWith("pglite:");

  const task = await readTaskFile(file);
  let store = await openStore(db);
  await publishTasks(store, dirname(file));
  const run = await store.enqueueRun({ task: task.name, input });
  const clock = new VirtualClock();
  const custom = await loadToolsModule(options.toolsModule);
  const engine = newEngine(store, clock, options, custom);
  let suspensions = 0;
  let snapshotBytesMax = 0;
  let invocations = 0;
  const note = (results: InvocationResult[]) => {
    for (const r of results) {
      invocations++;
      console.error(
        `[run-task] ${r.task} ${r.runId.slice(0, 8)} → ${r.status}` +
          (r.snapshotBytes ? ` (snapshot ${r.snapshotBytes} bytes)` : "") +
          (r.restored ? " [restored]" : ""),
      );
      if (r.runId === run.id && r.snapshotBytes) {
        suspensions++;
        snapshotBytesMax = Math.max(snapshotBytesMax, r.snapshotBytes);
      }
    }
  };
  for (;;) {
    let results: InvocationResult[];
    if (subprocess) {
      if (sharedPglite) await store.close();
      const child = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          import.meta.filename!,
          "--step",
          "--db",
          db,
          "--clock-offset",
          String(clock.offsetMs),
          ...(options.durableAll ? ["--durable-all"] : []),
          ...(options.toolsModule ? ["--tools", options.toolsModule] : []),
        ],
        stdout: "piped",
        stderr: "inherit",
      }).output();
      if (sharedPglite) store = await openStore(db);
      const out = new TextDecoder().decode(child.stdout).trim().split("\n").pop() ?? "";
      if (!child.success) throw new Error(`the step process failed (exit ${child.code})`);
      results = JSON.parse(out) as InvocationResult[];
    } else {
      results = await engine.claimAndRun({ limit: 8 });
    }
    note(results);
    if (results.length > 0) continue;
    const root = await store.getRun(run.id);
    if (!root) throw new Error(`run ${run.id} vanished`);
    if (isFinal(root.status)) break;
    const next = await store.nextWakeAt(clock.now());
    if (!next) {
      throw new Error(`run ${run.id} is ${root.status} with nothing due and nothing to wake it`);
    }
    if (values["real-time"]) {
      await new Promise((r) => setTimeout(r, Math.max(0, next.getTime() - clock.now().getTime())));
    } else {
      clock.jumpTo(next);
    }
  }
  const root = (await store.getRun(run.id))!;
  await store.close();
  const summary = {
    runId: root.id,
    status: root.status,
    result: root.result ?? null,
    error: root.error ?? null,
    logs: (root.logs ?? []).filter((l) => l.level !== "system").map((l) => ({
      level: l.level,
      message: l.message,
    })),
    suspensions,
    snapshotBytesMax,
    invocations,
    virtualTimeMs: clock.offsetMs,
  };
  console.log(JSON.stringify(summary));
  return root.status === "completed" ? 0 : 1;
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (e) {
    console.error(`run-task: ${(e as Error).message}`);
    Deno.exit(2);
  }
}
