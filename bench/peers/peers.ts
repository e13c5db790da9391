#!/usr/bin/env -S deno run -A
/**
 * `deno task bench:peers`: this project's worker beside graphile-worker and DBOS Transact on
 * the same PostgreSQL, one worker process each, one database each, interleaved (ours,
 * graphile, dbos, then again) so the ratios of one run are fair on a noisy machine. Prints a
 * table with the project/peer ratios and PASS/FAIL per target; writes bench/peers.json.
 *
 * The peers are bench-only: npm installs them into a cache folder (reused when present) and
 * node runs them; neither the library nor deno.lock knows them.
 *
 *   deno task bench:peers [--quick] [--rounds N] [--systems ours,graphile,dbos]
 *     [--db-url postgres://postgres@127.0.0.1:5432] [--dbos-poll-ms 50] [--keep-dbs]
 *     [--trivial-n 2000] [--trivial-concurrency 1,4,8,16,32] [--latency-samples 200]
 *     [--steps-n 200] [--steps-concurrency 8] [--sleep-n 100] [--sleep-concurrency 8]
 *     [--steady-batches 10] [--steady-per-batch 50] [--steady-every-round]
 *     [--workloads trivial,latency,steps,sleep,steady]
 *     [--ours-mode in-process|threads] [--peers-dir DIR] [--update-peers]
 *     [--out bench/peers.json] [--json]
 *
 * Exit code: 0 when every workload ran (a FAILed target is a finding, not an error), 1 when a
 * workload could not run, 2 on bad usage.
 */
import { parseArgs } from "node:util";
import { cpus, homedir, loadavg, totalmem } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import postgres from "postgres";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const HERE = fileURLToPath(new URL(".", import.meta.url));
const SYSTEMS = ["ours", "graphile", "dbos"] as const;
type System = typeof SYSTEMS[number];
const WORKLOADS = ["trivial", "latency", "steps", "sleep", "steady"];

/** What npm installs: the latest 0.17 of graphile-worker, the latest DBOS. */
const PEER_SPECS = {
  "graphile-worker": "~0.17.0",
  "@dbos-inc/dbos-sdk": "latest",
  pg: "^8.11.0",
};

/**
 * DBOS queues only poll (no LISTEN): at its default of 1000 ms a queue starts at most
 * workerConcurrency workflows a second and enqueue → start is ~1 s, so 2,000 trivial jobs at
 * concurrency 1 would take half an hour. 50 ms is the tuned setting the comparison uses; the
 * default is one flag away (--dbos-poll-ms 1000).
 */
const DBOS_POLL_MS = 50;

interface Config {
  quick: boolean;
  rounds: number;
  systems: System[];
  dbUrl: string;
  dbosPollMs: number;
  keepDbs: boolean;
  trivialN: number;
  trivialConcurrency: number[];
  latencySamples: number;
  stepsN: number;
  stepsConcurrency: number;
  sleepN: number;
  sleepConcurrency: number;
  steadyBatches: number;
  steadyPerBatch: number;
  steadyEveryRound: boolean;
  workloads: string[];
  /**
   * How our worker runs its VMs: on its own thread as the peers run their jobs (the
   * comparison's default), or on its pool of threads, one per concurrent invocation, each
   * stopped from outside at its deadline (the worker's default; the peers have no such thing).
   */
  oursMode: "in-process" | "threads";
  peersDir: string;
  updatePeers: boolean;
  out: string;
  json: boolean;
}

class UsageError extends Error {
  override name = "UsageError";
}

// deno-lint-ignore no-explicit-any
type Result = Record<string, any>;

interface Entry {
  round: number;
  system: System;
  workload: string;
  args: string[];
  result?: Result;
  error?: string;
  wallMs: number;
}

function parseConfig(args: string[]): Config {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      quick: { type: "boolean", default: false },
      rounds: { type: "string" },
      systems: { type: "string", default: SYSTEMS.join(",") },
      "db-url": { type: "string", default: "postgres://postgres@127.0.0.1:5432" },
      "dbos-poll-ms": { type: "string", default: String(DBOS_POLL_MS) },
      "keep-dbs": { type: "boolean", default: false },
      "trivial-n": { type: "string" },
      "trivial-concurrency": { type: "string" },
      "latency-samples": { type: "string" },
      "steps-n": { type: "string" },
      "steps-concurrency": { type: "string", default: "8" },
      "sleep-n": { type: "string" },
      "sleep-concurrency": { type: "string", default: "8" },
      "steady-batches": { type: "string" },
      "steady-per-batch": { type: "string" },
      "steady-every-round": { type: "boolean", default: false },
      workloads: { type: "string", default: WORKLOADS.join(",") },
      "ours-mode": { type: "string", default: "in-process" },
      "peers-dir": { type: "string" },
      "update-peers": { type: "boolean", default: false },
      out: { type: "string", default: join(ROOT, "bench/peers.json") },
      json: { type: "boolean", default: false },
    },
  });
  if (positionals.length) throw new UsageError(`unexpected argument ${positionals[0]}`);
  const quick = values.quick;
  // quick: every workload, small enough for a couple of minutes; full: the issue's sizes
  const pick = (name: keyof typeof values, full: string, small: string): number => {
    const text = (values[name] as string | undefined) ?? (quick ? small : full);
    const n = Number(text);
    if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${name}: not a count: ${text}`);
    return n;
  };
  const systems = values.systems.split(",").map((s) => s.trim()) as System[];
  for (const s of systems) {
    if (!SYSTEMS.includes(s)) throw new UsageError(`--systems: unknown system ${s}`);
  }
  const oursMode = values["ours-mode"];
  if (oursMode !== "in-process" && oursMode !== "threads") {
    throw new UsageError(`--ours-mode: in-process or threads, not ${oursMode}`);
  }
  const workloads = values.workloads.split(",").map((w) => w.trim());
  for (const w of workloads) {
    if (!WORKLOADS.includes(w)) throw new UsageError(`--workloads: unknown workload ${w}`);
  }
  const trivialConcurrency = (values["trivial-concurrency"] ?? (quick ? "4,16" : "1,4,8,16,32"))
    .split(",").map(Number);
  if (trivialConcurrency.some((c) => !Number.isInteger(c) || c < 1)) {
    throw new UsageError(`--trivial-concurrency: not a list of counts`);
  }
  return {
    quick,
    rounds: pick("rounds", "2", "1"),
    systems,
    dbUrl: values["db-url"].replace(/\/$/, ""),
    dbosPollMs: pick("dbos-poll-ms", String(DBOS_POLL_MS), String(DBOS_POLL_MS)),
    keepDbs: values["keep-dbs"],
    trivialN: pick("trivial-n", "2000", "200"),
    trivialConcurrency,
    latencySamples: pick("latency-samples", "200", "30"),
    stepsN: pick("steps-n", "200", "40"),
    stepsConcurrency: pick("steps-concurrency", "8", "8"),
    sleepN: pick("sleep-n", "100", "30"),
    sleepConcurrency: pick("sleep-concurrency", "8", "8"),
    steadyBatches: pick("steady-batches", "10", "3"),
    steadyPerBatch: pick("steady-per-batch", "50", "20"),
    steadyEveryRound: values["steady-every-round"],
    workloads,
    oursMode,
    peersDir: values["peers-dir"] ?? Deno.env.get("BENCH_PEERS_DIR") ??
      join(homedir(), ".cache/quickjs-bench-peers"),
    updatePeers: values["update-peers"],
    out: values.out,
    json: values.json,
  };
}

const note = (message: string) => console.error(`[bench:peers] ${message}`);

// ---- the peers' install --------------------------------------------------------------------

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** npm-installs the peers into their cache folder, unless they are there already. */
async function installPeers(dir: string, update: boolean): Promise<void> {
  const have = await Promise.all(
    Object.keys(PEER_SPECS).map((name) => exists(join(dir, "node_modules", name, "package.json"))),
  );
  if (have.every(Boolean) && !update) return;
  note(`installing the peers into ${dir} (npm)`);
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(
    join(dir, "package.json"),
    JSON.stringify({ name: "quickjs-bench-peers", private: true, type: "module" }, null, 2),
  );
  const specs = Object.entries(PEER_SPECS).map(([name, spec]) => `${name}@${spec}`);
  const out = await new Deno.Command("npm", {
    args: ["install", "--no-audit", "--no-fund", "--no-save", ...specs],
    cwd: dir,
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`npm install in ${dir} failed`);
}

// ---- databases and drivers -----------------------------------------------------------------

/**
 * A database per system and per run: two runs at once (another checkout, another agent) must
 * not drop or migrate each other's databases, which a fixed name let them do.
 */
const RUN_TAG = `${Date.now().toString(36)}${Deno.pid}`;

function dbName(system: System): string {
  return `qjs_bench_peers_${RUN_TAG}_${system}`;
}

async function recreateDatabases(config: Config): Promise<void> {
  const admin = postgres(`${config.dbUrl}/postgres`, { max: 1, onnotice: () => {} });
  try {
    for (const system of config.systems) {
      await admin.unsafe(`drop database if exists ${dbName(system)} with (force)`);
      await admin.unsafe(`create database ${dbName(system)}`);
    }
  } finally {
    await admin.end();
  }
}

async function dropDatabases(config: Config): Promise<void> {
  const admin = postgres(`${config.dbUrl}/postgres`, { max: 1, onnotice: () => {} });
  try {
    for (const system of config.systems) {
      await admin.unsafe(`drop database if exists ${dbName(system)} with (force)`);
    }
  } finally {
    await admin.end();
  }
}

async function serverVersion(config: Config): Promise<string> {
  const sql = postgres(`${config.dbUrl}/postgres`, { max: 1, onnotice: () => {} });
  try {
    const [row] = await sql`select current_setting('server_version') as v`;
    return row!.v;
  } finally {
    await sql.end();
  }
}

/** Runs one workload through a system's driver (a process of its own) and parses RESULT. */
async function runDriver(
  config: Config,
  system: System,
  workload: string,
  args: string[],
): Promise<{ result?: Result; error?: string; wallMs: number }> {
  const db = `${config.dbUrl}/${dbName(system)}`;
  const [cmd, script] = system === "ours"
    ? [Deno.execPath(), ["run", "-A", "--frozen", join(HERE, "ours.ts")]]
    : ["node", [join(HERE, `${system}.mjs`)]];
  const started = performance.now();
  const out = await new Deno.Command(cmd, {
    args: [...script, workload, "--db", db, ...args],
    cwd: ROOT,
    env: {
      BENCH_PEERS_DIR: config.peersDir,
      BENCH_DBOS_POLL_MS: String(config.dbosPollMs),
      BENCH_OURS_MODE: config.oursMode,
      NODE_NO_WARNINGS: "1",
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const wallMs = Math.round(performance.now() - started);
  const stdout = new TextDecoder().decode(out.stdout);
  const line = stdout.split("\n").find((l) => l.startsWith("RESULT "));
  if (out.success && line) return { result: JSON.parse(line.slice("RESULT ".length)), wallMs };
  const stderr = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-15).join("\n");
  return { error: stderr || `exit ${out.code}`, wallMs };
}

// ---- the plan: rounds of workloads, each system in turn -------------------------------------

interface Step {
  workload: string;
  args: (system: System) => string[];
  /** A trivial step of the concurrency sweep: which concurrency. */
  concurrency?: (system: System) => number;
}

function roundSteps(config: Config, round: number, best: Map<System, number>): Step[] {
  const steps: Step[] = [];
  // round 1 sweeps the concurrencies; later rounds repeat each system's best of round 1
  const levels = round === 1 ? config.trivialConcurrency.map((c) => () => c) : [
    (s: System) => best.get(s) ?? config.trivialConcurrency[0]!,
  ];
  for (const level of levels) {
    steps.push({
      workload: "trivial",
      concurrency: level,
      args: (s) => ["--n", String(config.trivialN), "--concurrency", String(level(s))],
    });
  }
  steps.push({
    workload: "latency",
    args: () => ["--samples", String(config.latencySamples), "--concurrency", "4"],
  });
  steps.push({
    workload: "steps",
    args: () => ["--n", String(config.stepsN), "--concurrency", String(config.stepsConcurrency)],
  });
  // a sleeping DBOS workflow holds its queue slot, so it gets one slot per workflow: otherwise
  // they could not all sleep at once; ours and graphile free the slot while the run sleeps
  steps.push({
    workload: "sleep",
    args: (s) => [
      "--n",
      String(config.sleepN),
      "--concurrency",
      String(s === "dbos" ? config.sleepN : config.sleepConcurrency),
    ],
  });
  // the steady state compares a worker with itself (last batch / first), so one round of
  // it is enough; with a leak it is also the longest workload by far
  if (round > 1 && !config.steadyEveryRound) return only(config, steps);
  steps.push({
    workload: "steady",
    args: () => [
      "--batches",
      String(config.steadyBatches),
      "--per-batch",
      String(config.steadyPerBatch),
      "--concurrency",
      String(config.stepsConcurrency),
    ],
  });
  return only(config, steps);
}

/** The steps of the workloads --workloads asked for. */
function only(config: Config, steps: Step[]): Step[] {
  return steps.filter((step) => config.workloads.includes(step.workload));
}

// ---- figures, ratios, targets --------------------------------------------------------------

function median(xs: number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return NaN;
  const mid = s.length / 2;
  return s.length % 2 ? s[Math.floor(mid)]! : (s[mid - 1]! + s[mid]!) / 2;
}

const r2 = (x: number) => Math.round(x * 100) / 100;

interface Figures {
  trivialBest: {
    perSec: number;
    concurrency: number;
    peakRssMb: number;
    /** Excluding the worker's start-up: from the first job done to the last. */
    perSecAfterFirst: number;
    firstDoneMs: number;
  };
  trivialByConcurrency: Record<number, number>;
  latencyP50: number;
  latencyP95: number;
  stepsPerSec: number;
  stepsPeakRssMb: number;
  /** The worker's own CPU per workflow (user + system), apart from Postgres. */
  stepsCpuMsPerWorkflow: number;
  trivialCpuMsPerJob: number;
  sleepPerSec: number;
  peakRssMb: number;
  steady: {
    perSec: number[];
    rssMb: number[];
    lastVsFirst: number;
    rssGrowth: number;
    mbPerBatch: number;
    cpuMsPerWorkflow: number[];
  };
}

/** One system's figures from some entries (one round's, or all of them: medians by round). */
function figuresOf(entries: Entry[], system: System): Figures {
  const mine = entries.filter((e) => e.system === system && e.result);
  const rounds = [...new Set(mine.map((e) => e.round))];
  const byRound = <T>(workload: string, f: (r: Result) => T): T[] =>
    rounds.flatMap((round) =>
      mine.filter((e) => e.round === round && e.workload === workload).map((e) => f(e.result!))
    );
  // trivial: the median jobs/s at each concurrency, the best of those
  const trivial = mine.filter((e) => e.workload === "trivial").map((e) => e.result!);
  const byConcurrency: Record<number, number> = {};
  for (const c of [...new Set(trivial.map((r) => r.concurrency as number))].sort((a, b) => a - b)) {
    byConcurrency[c] = median(trivial.filter((r) => r.concurrency === c).map((r) => r.perSec));
  }
  let best = {
    perSec: NaN,
    concurrency: NaN,
    peakRssMb: NaN,
    perSecAfterFirst: NaN,
    firstDoneMs: NaN,
  };
  for (const [c, perSec] of Object.entries(byConcurrency)) {
    if (!(perSec <= best.perSec)) {
      const at = trivial.filter((r) => r.concurrency === Number(c));
      best = {
        perSec,
        concurrency: Number(c),
        peakRssMb: median(at.map((r) => r.peakRssMb)),
        perSecAfterFirst: median(at.map((r) => r.perSecAfterFirst)),
        firstDoneMs: median(at.map((r) => r.firstDoneMs)),
      };
    }
  }
  const stepsPeak = median(byRound("steps", (r) => r.peakRssMb));
  // steady: batch by batch, the median over rounds
  const steadyRows = byRound("steady", (r) => r.rows as Result[]);
  const batches = Math.max(0, ...steadyRows.map((rows) => rows.length));
  const perSec = Array.from(
    { length: batches },
    (_, b) => r2(median(steadyRows.map((rows) => rows[b]?.perSec))),
  );
  const rssMb = Array.from(
    { length: batches },
    (_, b) => r2(median(steadyRows.map((rows) => rows[b]?.rssMb))),
  );
  const cpuMsPerWorkflow = Array.from(
    { length: batches },
    (_, b) => r2(median(steadyRows.map((rows) => rows[b]?.workerCpuMsPerWorkflow))),
  );
  const first = perSec[0] ?? NaN, last = perSec[batches - 1] ?? NaN;
  const firstRss = rssMb[0] ?? NaN, lastRss = rssMb[batches - 1] ?? NaN;
  return {
    trivialBest: best,
    trivialByConcurrency: byConcurrency,
    latencyP50: median(byRound("latency", (r) => r.p50)),
    latencyP95: median(byRound("latency", (r) => r.p95)),
    stepsPerSec: median(byRound("steps", (r) => r.perSec)),
    stepsPeakRssMb: stepsPeak,
    stepsCpuMsPerWorkflow: median(byRound("steps", (r) => r.workerCpuMsPerJob)),
    trivialCpuMsPerJob: median(
      trivial.filter((r) => r.concurrency === best.concurrency).map((r) => r.workerCpuMsPerJob),
    ),
    sleepPerSec: median(byRound("sleep", (r) => r.perSec)),
    peakRssMb: Math.max(best.peakRssMb, stepsPeak),
    steady: {
      perSec,
      rssMb,
      lastVsFirst: r2(last / first),
      rssGrowth: r2(lastRss / firstRss),
      mbPerBatch: batches > 1 ? r2((lastRss - firstRss) / (batches - 1)) : NaN,
      cpuMsPerWorkflow,
    },
  };
}

interface Target {
  name: string;
  /** ours / peer (or last / first for the steady state). */
  ratio: number;
  target: string;
  pass: boolean;
  /** The same ratio round by round. */
  byRound: number[];
}

function targets(all: Entry[], rounds: number[], sleepN: number): Target[] {
  const evaluate = (entries: Entry[]) => {
    const f = Object.fromEntries(SYSTEMS.map((s) => [s, figuresOf(entries, s)])) as Record<
      System,
      Figures
    >;
    return [
      {
        name: "trivial jobs/s vs graphile-worker",
        ratio: f.ours.trivialBest.perSec / f.graphile.trivialBest.perSec,
        target: "≥ 1.0",
        ok: (x: number) => x >= 1.0,
      },
      {
        name: "10-step workflows/s vs DBOS",
        ratio: f.ours.stepsPerSec / f.dbos.stepsPerSec,
        target: "≥ 1.5",
        ok: (x: number) => x >= 1.5,
      },
      {
        name: "enqueue→start p50 vs graphile-worker",
        ratio: f.ours.latencyP50 / f.graphile.latencyP50,
        target: "≤ 1.0",
        ok: (x: number) => x <= 1.0,
      },
      {
        name: `${sleepN} durable 1 s sleeps, workflows/s vs DBOS`,
        ratio: f.ours.sleepPerSec / f.dbos.sleepPerSec,
        target: "≥ 1.5",
        ok: (x: number) => x >= 1.5,
      },
      {
        name: "worker peak RSS vs graphile-worker",
        ratio: f.ours.peakRssMb / f.graphile.peakRssMb,
        target: "≤ 1.5",
        ok: (x: number) => x <= 1.5,
      },
      {
        name: "steady state: last batch / first batch",
        ratio: f.ours.steady.lastVsFirst,
        target: "≥ 0.9",
        ok: (x: number) => x >= 0.9,
      },
      {
        name: "steady state: RSS last batch / first batch",
        ratio: f.ours.steady.rssGrowth,
        target: "≤ 1.1 (flat)",
        ok: (x: number) => x <= 1.1,
      },
    ];
  };
  const overall = evaluate(all);
  const perRound = rounds.map((round) => evaluate(all.filter((e) => e.round === round)));
  return overall.map((t, i) => ({
    name: t.name,
    ratio: r2(t.ratio),
    target: t.target,
    pass: Number.isFinite(t.ratio) && t.ok(t.ratio),
    byRound: perRound.map((p) => r2(p[i]!.ratio)),
  }));
}

// ---- output --------------------------------------------------------------------------------

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) =>
    r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join("  ")
  ).join("\n");
}

const fmt = (x: number, digits = 1) => Number.isFinite(x) ? x.toFixed(digits) : "—";

function report(figures: Record<System, Figures>, checks: Target[], config: Config): string {
  const s = config.systems;
  const rows: string[][] = [["", ...s]];
  const add = (label: string, f: (x: Figures) => string) =>
    rows.push([label, ...s.map((x) => f(figures[x]))]);
  for (const c of config.trivialConcurrency) {
    add(`trivial jobs/s @${c}`, (x) => fmt(x.trivialByConcurrency[c] ?? NaN));
  }
  add(
    "trivial jobs/s, best (@c)",
    (x) => `${fmt(x.trivialBest.perSec)} (@${x.trivialBest.concurrency})`,
  );
  add("  after the first job done", (x) => fmt(x.trivialBest.perSecAfterFirst));
  add("  first job done after ms", (x) => fmt(x.trivialBest.firstDoneMs, 0));
  add("enqueue→start p50 ms", (x) => fmt(x.latencyP50));
  add("enqueue→start p95 ms", (x) => fmt(x.latencyP95));
  add(`10-step workflows/s @${config.stepsConcurrency}`, (x) => fmt(x.stepsPerSec, 2));
  add(`${config.sleepN} × durable 1 s sleep, wf/s`, (x) => fmt(x.sleepPerSec, 2));
  add("worker CPU ms/job, trivial (best c)", (x) => fmt(x.trivialCpuMsPerJob, 2));
  add("worker CPU ms/workflow, 10-step", (x) => fmt(x.stepsCpuMsPerWorkflow, 2));
  add("peak RSS MB, trivial (best c)", (x) => fmt(x.trivialBest.peakRssMb));
  add("peak RSS MB, 10-step", (x) => fmt(x.stepsPeakRssMb));
  add("steady wf/s, first → last", (x) => {
    const p = x.steady.perSec;
    return `${fmt(p[0] ?? NaN, 2)} → ${fmt(p[p.length - 1] ?? NaN, 2)}`;
  });
  add("steady RSS MB, first → last", (x) => {
    const m = x.steady.rssMb;
    return `${fmt(m[0] ?? NaN)} → ${fmt(m[m.length - 1] ?? NaN)}`;
  });
  add("steady RSS MB per batch", (x) => fmt(x.steady.mbPerBatch, 2));
  add("steady CPU ms/wf, first → last", (x) => {
    const c = x.steady.cpuMsPerWorkflow;
    return `${fmt(c[0] ?? NaN)} → ${fmt(c[c.length - 1] ?? NaN)}`;
  });
  const targetRows = [["target", "ratio", "wanted", "by round", ""]];
  for (const t of checks) {
    targetRows.push([
      t.name,
      fmt(t.ratio, 2),
      t.target,
      t.byRound.map((x) => fmt(x, 2)).join(", "),
      t.pass ? "PASS" : "FAIL",
    ]);
  }
  return `${table(rows)}\n\n${table(targetRows)}`;
}

export async function main(args: string[] = Deno.args): Promise<number> {
  let config: Config;
  try {
    config = parseConfig(args);
  } catch (e) {
    console.error(`bench:peers: ${(e as Error).message}`);
    return 2;
  }
  const startedAt = new Date();
  const loadBefore = loadavg();
  await installPeers(config.peersDir, config.updatePeers);
  await recreateDatabases(config);
  const entries: Entry[] = [];
  const versions: Record<string, unknown> = { postgres: await serverVersion(config) };
  let failed = 0;
  try {
    for (const system of config.systems) {
      const setup = await runDriver(config, system, "setup", []);
      if (setup.error) throw new Error(`${system} setup failed:\n${setup.error}`);
      versions[system] = setup.result!.versions;
    }
    const best = new Map<System, number>();
    for (let round = 1; round <= config.rounds; round++) {
      for (const step of roundSteps(config, round, best)) {
        for (const system of config.systems) {
          const args = step.args(system);
          note(`round ${round}: ${system} ${step.workload} ${args.join(" ")}`);
          const out = await runDriver(config, system, step.workload, args);
          entries.push({ round, system, workload: step.workload, args, ...out });
          if (out.error) {
            failed++;
            note(`  FAILED: ${out.error}`);
          } else {
            const r = out.result!;
            note(
              `  ${
                r.perSec !== undefined
                  ? `${r.perSec}/s, peak ${r.peakRssMb} MB`
                  : r.p50 !== undefined
                  ? `p50 ${r.p50} ms, p95 ${r.p95} ms`
                  : r.rows.map((x: Result) => `${x.perSec}/s ${x.rssMb} MB`).join(" | ")
              } (${out.wallMs} ms)`,
            );
          }
        }
      }
      if (round === 1) {
        for (const system of config.systems) {
          best.set(system, figuresOf(entries, system).trivialBest.concurrency);
        }
      }
    }
  } finally {
    if (!config.keepDbs) await dropDatabases(config);
  }
  const figures = Object.fromEntries(
    config.systems.map((s) => [s, figuresOf(entries, s)]),
  ) as Record<System, Figures>;
  const rounds = Array.from({ length: config.rounds }, (_, i) => i + 1);
  const checks = config.systems.length === SYSTEMS.length
    ? targets(entries, rounds, config.sleepN)
    : [];
  const results = {
    date: startedAt.toISOString(),
    finished: new Date().toISOString(),
    mode: config.quick ? "quick" : "full",
    machine: {
      cpus: cpus().length,
      cpu: cpus()[0]?.model ?? "unknown",
      memoryGb: Math.round(totalmem() / 2 ** 30),
      os: Deno.build.target,
      loadavgBefore: loadBefore.map(r2),
      loadavgAfter: loadavg().map(r2),
    },
    versions,
    config: {
      rounds: config.rounds,
      trivialN: config.trivialN,
      trivialConcurrency: config.trivialConcurrency,
      latencySamples: config.latencySamples,
      stepsN: config.stepsN,
      stepsConcurrency: config.stepsConcurrency,
      sleepN: config.sleepN,
      sleepConcurrency: {
        ours: config.sleepConcurrency,
        graphile: config.sleepConcurrency,
        dbos: config.sleepN,
      },
      steadyBatches: config.steadyBatches,
      steadyPerBatch: config.steadyPerBatch,
      dbosPollMs: config.dbosPollMs,
      oursMode: config.oursMode,
    },
    figures,
    targets: checks,
    runs: entries,
  };
  await Deno.writeTextFile(config.out, JSON.stringify(results, null, 2) + "\n");
  if (config.json) {
    console.log(JSON.stringify(results));
  } else {
    console.log(
      `bench:peers (${results.mode}, ${config.rounds} round(s)) on ${results.machine.cpus} CPUs, ` +
        `load ${
          loadBefore.map(r2).join(" ")
        }; postgres ${versions.postgres}; DBOS poll ${config.dbosPollMs} ms\n`,
    );
    console.log(report(figures, checks, config));
    console.log(`\nwrote ${config.out}`);
  }
  if (failed) note(`${failed} workload(s) failed; see "error" in ${config.out}`);
  return failed ? 1 : 0;
}

if (import.meta.main) {
  Deno.exit(await main());
}
