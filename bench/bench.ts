#!/usr/bin/env -S deno run -A
/**
 * `deno task bench`: what the sandbox costs. VM start-up and host-call round trips for both
 * QuickJS builds side by side, then the snapshot path on the product's build (suspend and
 * resume against a real store, snapshot sizes, resume after N calls, resume vs replay).
 * Prints a table and writes bench/results.json.
 *
 * The machine is shared and noisy: every figure is the median of many repetitions, the
 * two builds (and replay vs restore) are measured interleaved, and comparisons are ratios
 * of figures from the same run. Replay exists only here, as the yardstick for restore.
 */
import { parseArgs } from "node:util";
import assert from "node:assert/strict";
import {
  type BuildVariant,
  type CallOutcome,
  Engine,
  getBootImage,
  type Json,
  type Lease,
  resolveLimits,
  restoreSnapshot,
  takeSnapshot,
  type TaskContext,
  TaskVm,
  ToolRegistry,
  type VmState,
} from "../supabase/functions/_shared/quickjs/mod.ts";
import {
  findServer,
  openScratchStore,
  registerSyncBuild,
  type ScratchStore,
} from "../supabase/functions/_shared/quickjs/dev.ts";
import { createApp } from "../supabase/functions/quickjs/http/app.ts";

// the sync build is the yardstick only: the dev entry registers it, the product never does
registerSyncBuild();
const VARIANTS: BuildVariant[] = ["asyncify", "sync"];
const LIMITS = resolveLimits({});
const CONTEXT: TaskContext = { runId: "bench", task: "bench", attempt: 1 };
/** How the bench restores the snapshots of VMs it made with CONTEXT and LIMITS. */
const RESTORE = { runId: CONTEXT.runId, limits: LIMITS };
import { setVmReuse } from "../supabase/functions/_shared/quickjs/sandbox/wasm.ts";

const RESULTS_FILE = new URL("./results.json", import.meta.url);

/** Returns at once: the cost of a VM around nothing. */
const TRIVIAL_TASK = `export default async function () { return 1; }`;

/** Calls the host forever: one settle and one drain per iteration. */
const PING_TASK = `export default async function () {
  for (let i = 0; ; i++) await tools.svc.ping(i);
}`;

/** Parks on one call with almost nothing on its heap. */
const SMALL_TASK = `export default async function (input) {
  const reply = await tools.svc.get(input);
  return reply;
}`;

/** Holds 10,000 small objects across its park. */
const OBJECTS_TASK = `export default async function () {
  const items = [];
  for (let i = 0; i < 10000; i++) items.push({ i, name: "item-" + i, tags: [i % 7] });
  const reply = await tools.svc.get();
  return items.length + reply;
}`;

/** input.n calls whose results it sums, then one more; what replay has to re-run. */
const LOOP_TASK = `export default async function (input) {
  let total = 0;
  for (let i = 0; i < input.n; i++) total += (await tools.svc.step(i)).v;
  const last = await tools.svc.last();
  return total + last.v;
}`;

/** Like LOOP_TASK without an end: the task the store cycle suspends and resumes. */
const CYCLE_TASK = `export default async function () {
  let total = 0;
  for (let i = 0; ; i++) total += (await tools.svc.step(i)).v;
}`;

interface Stats {
  p50: number;
  p10: number;
  p90: number;
  n: number;
}

function stats(samples: number[]): Stats {
  assert.ok(samples.length > 0, "no samples");
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  const mid = sorted.length / 2;
  const p50 = sorted.length % 2 ? sorted[Math.floor(mid)]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { p50: round(p50), p10: round(at(0.1)), p90: round(at(0.9)), n: sorted.length };
}

function round(x: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function expectParked(state: VmState, calls: number[]): void {
  assert.deepEqual(state, { kind: "parked", calls }, `expected a VM parked on ${calls}`);
}

function expectDone(state: VmState): void {
  assert.equal(state.kind, "done", `expected a finished task, got ${JSON.stringify(state)}`);
}

const step = (v: number): CallOutcome => ({ ok: true, value: { v } as Json });

// ---- (1) the two builds side by side ---------------------------------------------------

interface VariantFigures {
  vm_create_ms: Stats;
  trivial_task_ms: Stats;
  host_call_roundtrip_ms: Stats;
}

async function measureVariants(reps: number, roundtrips: number) {
  const samples = Object.fromEntries(
    VARIANTS.map((
      v,
    ) => [v, { create: [] as number[], trivial: [] as number[], call: [] as number[] }]),
  ) as Record<BuildVariant, { create: number[]; trivial: number[]; call: number[] }>;
  for (let i = 0; i < reps; i++) {
    for (const variant of i % 2 ? [...VARIANTS].reverse() : VARIANTS) {
      // (a) a new module instance and context, ready to start
      let t0 = performance.now();
      const vm = await TaskVm.create({ limits: LIMITS, variant });
      samples[variant].create.push(performance.now() - t0);
      vm.dispose();
      // (b) create, run a task that returns at once, dispose
      t0 = performance.now();
      const trivial = await TaskVm.create({ limits: LIMITS, variant });
      const state = trivial.start({ code: TRIVIAL_TASK }, null, CONTEXT);
      trivial.dispose();
      samples[variant].trivial.push(performance.now() - t0);
      expectDone(state);
    }
  }
  // (c) settle an inline call and run to the next park, alternating the builds call by call
  const vms = new Map<BuildVariant, TaskVm>();
  for (const variant of VARIANTS) {
    const vm = await TaskVm.create({ limits: LIMITS, variant });
    expectParked(vm.start({ code: PING_TASK }, null, CONTEXT), [1]);
    vm.takeCalls();
    vms.set(variant, vm);
  }
  for (let id = 1; id <= roundtrips; id++) {
    for (const [variant, vm] of vms) {
      const t0 = performance.now();
      vm.settle(id, { ok: true, value: id });
      const state = vm.run();
      samples[variant].call.push(performance.now() - t0);
      if (state.kind !== "parked" || state.calls[0] !== id + 1) expectParked(state, [id + 1]);
      vm.takeCalls();
    }
  }
  for (const vm of vms.values()) vm.dispose();
  const figures = {} as Record<BuildVariant, VariantFigures>;
  for (const variant of VARIANTS) {
    figures[variant] = {
      vm_create_ms: stats(samples[variant].create),
      trivial_task_ms: stats(samples[variant].trivial),
      host_call_roundtrip_ms: stats(samples[variant].call),
    };
  }
  return figures;
}

// ---- (2) suspend and resume through the store --------------------------------------------

async function measureStoreCycle(db: ScratchStore, cycles: number) {
  const store = db.store;
  await store.publishTask({ name: "bench-cycle", code: CYCLE_TASK });
  const run = await store.enqueueRun({ task: "bench-cycle", input: {} });
  const claim = async () => {
    const [claimed] = await store.claimRuns({ worker: "bench", runId: run.id, leaseSeconds: 300 });
    assert.ok(claimed, "the run could not be claimed");
    return claimed;
  };
  let claimed = await claim();
  let lease: Lease = { runId: run.id, token: claimed.fencingToken };
  let vm = await TaskVm.create({ limits: LIMITS });
  let state = vm.start({ code: CYCLE_TASK }, null, { ...CONTEXT, runId: run.id });
  const s = {
    snapshot: [] as number[],
    storeSuspend: [] as number[],
    suspend: [] as number[],
    claim: [] as number[],
    restore: [] as number[],
    resume: [] as number[],
    resumeWithClaim: [] as number[],
    bytes: [] as number[],
  };
  for (let cycle = 0; cycle < cycles; cycle++) {
    const [call] = vm.takeCalls();
    assert.ok(call && state.kind === "parked" && state.calls[0] === call.id);
    // The engine journals every call; not part of the suspension itself.
    await store.recordCall(lease, { ...call, seq: call.id, mode: "durable" });
    const t0 = performance.now();
    const snapshot = await takeSnapshot(vm, { runId: run.id });
    const t1 = performance.now();
    await store.suspendRun(lease, {
      snapshot: snapshot.bytes,
      header: snapshot.header,
      // due already, so the run is queued again at once
      wakeAt: new Date(Date.now() - 1000),
      waitingOn: { calls: snapshot.header.parkedCalls },
    });
    const t2 = performance.now();
    vm.dispose();
    const t3 = performance.now();
    claimed = await claim();
    const t4 = performance.now();
    assert.ok(claimed.snapshot, "the claim did not load the snapshot");
    ({ vm } = await restoreSnapshot(claimed.snapshot, { runId: run.id, limits: LIMITS }));
    const t5 = performance.now();
    vm.settle(call.id, step(cycle));
    state = vm.run();
    const t6 = performance.now();
    expectParked(state, [call.id + 1]);
    lease = { runId: run.id, token: claimed.fencingToken };
    s.snapshot.push(t1 - t0);
    s.storeSuspend.push(t2 - t1);
    s.suspend.push(t2 - t0);
    s.claim.push(t4 - t3);
    s.restore.push(t5 - t4);
    s.resume.push(t6 - t4);
    s.resumeWithClaim.push(t6 - t3);
    s.bytes.push(snapshot.bytes.length);
  }
  vm.dispose();
  return {
    suspend_ms: stats(s.suspend),
    snapshot_only_ms: stats(s.snapshot),
    store_suspend_ms: stats(s.storeSuspend),
    resume_ms: stats(s.resume),
    restore_only_ms: stats(s.restore),
    claim_ms: stats(s.claim),
    resume_with_claim_ms: stats(s.resumeWithClaim),
    snapshot_bytes: stats(s.bytes),
  };
}

// ---- (3) snapshot sizes --------------------------------------------------------------------

async function parkedOnce(code: string, input: Json) {
  const vm = await TaskVm.create({ limits: LIMITS });
  expectParked(vm.start({ code }, input, CONTEXT), [1]);
  return vm;
}

async function measureSizes(reps: number) {
  const out: Record<string, { bytes: number; snapshot_ms: Stats; restore_ms: Stats }> = {};
  for (const [name, code] of [["small", SMALL_TASK], ["10k_objects", OBJECTS_TASK]] as const) {
    const vm = await parkedOnce(code, { id: 1 });
    const snapshotMs: number[] = [];
    const restoreMs: number[] = [];
    let bytes = new Uint8Array();
    for (let i = 0; i < reps; i++) {
      let t0 = performance.now();
      bytes = (await takeSnapshot(vm, { runId: CONTEXT.runId })).bytes;
      snapshotMs.push(performance.now() - t0);
      t0 = performance.now();
      const { vm: restored } = await restoreSnapshot(bytes, RESTORE);
      restoreMs.push(performance.now() - t0);
      restored.dispose();
    }
    vm.dispose();
    out[name] = {
      bytes: bytes.length,
      snapshot_ms: stats(snapshotMs),
      restore_ms: stats(restoreMs),
    };
  }
  return out;
}

// ---- (4) resume after N calls: restore vs replay -------------------------------------------

/** A VM that made `n` calls (all settled) and is parked on call n + 1. */
async function parkedAfter(n: number): Promise<TaskVm> {
  const vm = await TaskVm.create({ limits: LIMITS });
  let state = vm.start({ code: LOOP_TASK }, { n }, CONTEXT);
  for (let id = 1; id <= n; id++) {
    vm.takeCalls();
    vm.settle(id, step(id));
    state = vm.run();
  }
  expectParked(state, [n + 1]);
  vm.takeCalls();
  return vm;
}

/** Resume by restore: the VM parked on call n + 1, then settle it and run to the end. */
async function resumeByRestore(bytes: Uint8Array, n: number): Promise<number> {
  const t0 = performance.now();
  const { vm } = await restoreSnapshot(bytes, RESTORE);
  vm.settle(n + 1, step(0));
  const state = vm.run();
  const ms = performance.now() - t0;
  expectDone(state);
  vm.dispose();
  return ms;
}

/**
 * Resume by replay: a fresh VM re-runs the task from the top, and each call it makes is
 * answered from the journal, until it parks on call n + 1; then settle it and run to the end.
 */
async function resumeByReplay(journal: CallOutcome[], n: number): Promise<number> {
  const t0 = performance.now();
  const vm = await TaskVm.create({ limits: LIMITS });
  let state = vm.start({ code: LOOP_TASK }, { n }, CONTEXT);
  for (;;) {
    const calls = vm.takeCalls();
    const answered = calls.filter((c) => c.id <= n);
    if (answered.length === 0) break;
    for (const call of answered) {
      vm.settle(call.id, journal[call.id - 1]!);
      state = vm.run();
    }
  }
  expectParked(state, [n + 1]);
  vm.settle(n + 1, step(0));
  state = vm.run();
  const ms = performance.now() - t0;
  expectDone(state);
  vm.dispose();
  return ms;
}

async function measureResumeAfterCalls(ns: number[], reps: number) {
  const rows: { n: number; restore_ms: Stats; replay_ms: Stats; replay_over_restore: number }[] =
    [];
  for (const n of ns) {
    const vm = await parkedAfter(n);
    const { bytes } = await takeSnapshot(vm, { runId: CONTEXT.runId });
    vm.dispose();
    const journal = Array.from({ length: n }, (_, i) => step(i + 1));
    const restore: number[] = [];
    const replay: number[] = [];
    for (let i = 0; i < reps; i++) {
      // interleaved, so both see the same noise
      restore.push(await resumeByRestore(bytes, n));
      replay.push(await resumeByReplay(journal, n));
    }
    const r = stats(restore);
    const p = stats(replay);
    rows.push({ n, restore_ms: r, replay_ms: p, replay_over_restore: round(p.p50 / r.p50, 2) });
  }
  return rows;
}

// ---- (5) a trivial run end to end: engine, and HTTP through the edge function's handler -----

/**
 * A trivial run start to finish: enqueue, claim, fresh VM, run, complete (engine), and the
 * same through `POST /quickjs/runs` with `wait` (auth, validation, then a GET of the run).
 */
async function measureEndToEnd(db: ScratchStore, reps: number) {
  const store = db.store;
  const engine = new Engine({ store, tools: new ToolRegistry(store), workerId: "bench" });
  const app = createApp({
    store,
    engine,
    auth: { serviceRoleKey: "bench-key" },
    runInBackground: (work) => void work.catch(() => {}),
  });
  await store.publishTask({ name: "bench_trivial", code: TRIVIAL_TASK });
  const engineMs: number[] = [];
  const httpMs: number[] = [];
  for (let i = 0; i < reps + 5; i++) {
    let t = performance.now();
    const run = await store.enqueueRun({ task: "bench_trivial", input: { i } });
    const [done] = await engine.claimAndRun({ runId: run.id });
    assert.equal(
      done?.status,
      "completed",
      JSON.stringify({ run, done, now: new Date(), after: await store.getRun(run.id) }),
    );
    if (i >= 5) engineMs.push(performance.now() - t);
    t = performance.now();
    const response = await app(
      new Request("http://localhost/quickjs/runs", {
        method: "POST",
        headers: { authorization: "Bearer bench-key", "content-type": "application/json" },
        body: JSON.stringify({ task: "bench_trivial", input: { i }, wait: 5000 }),
      }),
    );
    const body = await response.json();
    assert.equal(body.run?.status, "completed", JSON.stringify(body));
    if (i >= 5) httpMs.push(performance.now() - t);
  }
  return { engine_trivial_run_ms: stats(engineMs), http_trivial_run_ms: stats(httpMs) };
}

// ---- output ---------------------------------------------------------------------------------

function table(header: string[], rows: (string | number)[][]): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  return cells
    .map((r) =>
      r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ")
    )
    .join("\n");
}

function render(results: Results): string {
  const v = results.variants;
  const ratio = results.asyncify_over_sync;
  const lines: string[] = [];
  lines.push(
    `QuickJS sandbox bench, ${results.date}`,
    `machine: ${results.machine.os_release}, ${results.machine.hardware_concurrency} CPUs, ` +
      `Deno ${results.machine.deno}; store: ${results.database.kind} (${results.database.description})`,
    "",
    `Build variants: medians (ms); ratio = asyncify / sync, measured interleaved`,
    table(["metric", "asyncify", "sync", "ratio"], [
      ...(["vm_create_ms", "trivial_task_ms", "host_call_roundtrip_ms"] as const).map((k) => [
        k,
        v.asyncify[k].p50,
        v.sync[k].p50,
        ratio[k],
      ]),
    ]),
    "",
    `Snapshots (asyncify): medians of ${results.store_cycle.suspend_ms.n} suspend/resume cycles through the store`,
    table(["metric", "value"], [
      ["suspend_ms_p50 (takeSnapshot + store.suspendRun)", results.suspend_ms_p50],
      ["  snapshot_only_ms_p50 (takeSnapshot)", results.snapshot_only_ms_p50],
      ["  store_suspend_ms_p50 (store.suspendRun)", results.store_suspend_ms_p50],
      ["resume_ms_p50 (restoreSnapshot + settle + run to next park)", results.resume_ms_p50],
      ["  restore_only_ms_p50 (restoreSnapshot)", results.restore_only_ms_p50],
      ["claim_ms_p50 (store.claimRuns, snapshot loaded)", results.claim_ms_p50],
      ["resume_with_claim_ms_p50 (claimRuns + resume)", results.resume_with_claim_ms_p50],
      ["snapshot_bytes_small (parked on one call)", results.snapshot_bytes_small],
      ["snapshot_bytes_10k_objects (parked on one call)", results.snapshot_bytes_10k_objects],
      ["snapshot_ms_10k_objects_p50", results.sizes["10k_objects"]!.snapshot_ms.p50],
      ["restore_ms_10k_objects_p50", results.sizes["10k_objects"]!.restore_ms.p50],
    ]),
    "",
    `Trivial run end to end on ${results.database.kind}: medians of ${results.end_to_end.http_trivial_run_ms.n}`,
    table(["metric", "value"], [
      [
        "engine_trivial_run_ms_p50 (enqueue + claim + VM + complete)",
        results.engine_trivial_run_ms_p50,
      ],
      ["http_trivial_run_ms_p50 (POST /quickjs/runs with wait)", results.http_trivial_run_ms_p50],
    ]),
    "",
    "Resume after N prior calls: restore (+ settle + finish) vs replay (re-run with journaled results + settle + finish), medians (ms)",
    table(
      ["N", "restore", "replay", "replay/restore"],
      results.resume_by_prior_calls.map((
        r,
      ) => [r.n, r.restore_ms.p50, r.replay_ms.p50, r.replay_over_restore]),
    ),
    `resume_replay_ratio_n1000 = ${results.resume_replay_ratio_n1000}`,
    "",
    `took ${results.bench_seconds} s; wrote ${RESULTS_FILE.pathname}`,
  );
  return lines.join("\n");
}

type Results = Awaited<ReturnType<typeof bench>>;

async function bench(options: { quick: boolean; log: (line: string) => void }) {
  const scale = options.quick ? 0.25 : 1;
  const reps = (n: number) => Math.max(3, Math.round(n * scale));
  const started = performance.now();
  const log = options.log;

  log("warming up both builds");
  for (const variant of VARIANTS) {
    await getBootImage(variant);
    for (let i = 0; i < 3; i++) {
      const vm = await TaskVm.create({ limits: LIMITS, variant });
      expectDone(vm.start({ code: TRIVIAL_TASK }, null, CONTEXT));
      vm.dispose();
    }
  }

  // Repetitions: medians settle well below these counts on a 2-CPU shared machine, and the
  // whole bench stays around 10 s (build variants ~4 s, store cycle ~2 s, replay ~3 s).
  log("build variants");
  const variants = await measureVariants(reps(300), reps(10_000));
  const asyncifyOverSync = Object.fromEntries(
    (["vm_create_ms", "trivial_task_ms", "host_call_roundtrip_ms"] as const).map((k) => [
      k,
      round(variants.asyncify[k].p50 / variants.sync[k].p50, 2),
    ]),
  ) as Record<keyof VariantFigures, number>;

  log("store: opening the database");
  // DATABASE_URL, else a local server, else PGlite (QUICKJS_TEST_PGLITE=1 forces it)
  const db = await openScratchStore(
    "bench",
    await findServer({
      url: Deno.env.get("DATABASE_URL"),
      pglite: Deno.env.get("QUICKJS_TEST_PGLITE") === "1",
    }),
  );
  let cycle: Awaited<ReturnType<typeof measureStoreCycle>>;
  let endToEnd: Awaited<ReturnType<typeof measureEndToEnd>>;
  try {
    log(`store cycle on ${db.kind}`);
    cycle = await measureStoreCycle(db, reps(200));
    log(`trivial runs end to end on ${db.kind}`);
    endToEnd = await measureEndToEnd(db, reps(100));
  } finally {
    await db.close({ drop: true });
  }

  log("snapshot sizes");
  const sizes = await measureSizes(reps(40));

  log("resume after N calls");
  const byCalls = await measureResumeAfterCalls([10, 100, 1000], reps(31));
  const n1000 = byCalls.find((r) => r.n === 1000)!;

  return {
    date: new Date().toISOString(),
    machine: {
      os_release: Deno.osRelease(),
      hardware_concurrency: navigator.hardwareConcurrency,
      deno: Deno.version.deno,
      v8: Deno.version.v8,
    },
    database: { kind: db.kind, description: db.driver.description },
    quick: options.quick,
    suspend_ms_p50: cycle.suspend_ms.p50,
    snapshot_only_ms_p50: cycle.snapshot_only_ms.p50,
    store_suspend_ms_p50: cycle.store_suspend_ms.p50,
    resume_ms_p50: cycle.resume_ms.p50,
    restore_only_ms_p50: cycle.restore_only_ms.p50,
    claim_ms_p50: cycle.claim_ms.p50,
    resume_with_claim_ms_p50: cycle.resume_with_claim_ms.p50,
    engine_trivial_run_ms_p50: endToEnd.engine_trivial_run_ms.p50,
    http_trivial_run_ms_p50: endToEnd.http_trivial_run_ms.p50,
    snapshot_bytes_small: sizes.small!.bytes,
    snapshot_bytes_10k_objects: sizes["10k_objects"]!.bytes,
    resume_ms_p50_n10: byCalls.find((r) => r.n === 10)!.restore_ms.p50,
    resume_ms_p50_n100: byCalls.find((r) => r.n === 100)!.restore_ms.p50,
    resume_ms_p50_n1000: n1000.restore_ms.p50,
    replay_ms_p50_n1000: n1000.replay_ms.p50,
    resume_replay_ratio_n1000: n1000.replay_over_restore,
    vm_create_ms_p50: {
      asyncify: variants.asyncify.vm_create_ms.p50,
      sync: variants.sync.vm_create_ms.p50,
    },
    trivial_task_ms_p50: {
      asyncify: variants.asyncify.trivial_task_ms.p50,
      sync: variants.sync.trivial_task_ms.p50,
    },
    host_call_roundtrip_ms_p50: {
      asyncify: variants.asyncify.host_call_roundtrip_ms.p50,
      sync: variants.sync.host_call_roundtrip_ms.p50,
    },
    asyncify_over_sync: asyncifyOverSync,
    variants,
    store_cycle: cycle,
    end_to_end: endToEnd,
    sizes,
    resume_by_prior_calls: byCalls,
    bench_seconds: round((performance.now() - started) / 1000, 1),
  };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      json: { type: "boolean", default: false },
      quick: { type: "boolean", default: false },
      pglite: { type: "boolean", default: false },
      "no-reuse": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(
      "usage: deno task bench [--json] [--quick] [--pglite] [--no-reuse]\n" +
        "  --json    print the results as JSON instead of a table\n" +
        "  --quick   a quarter of the repetitions (a smoke run; noisier)\n" +
        "  --pglite  use PGlite even if a PostgreSQL server answers\n" +
        "  --no-reuse  a new module instance for every VM (sandbox/wasm.ts setVmReuse)",
    );
    return 0;
  }
  if (values.pglite) Deno.env.set("QUICKJS_TEST_PGLITE", "1");
  if (values["no-reuse"]) setVmReuse(false);
  const log = (line: string) => console.error(`[bench] ${line}`);
  const results = await bench({ quick: values.quick, log });
  const tmp = new URL("./results.json.tmp", import.meta.url);
  await Deno.writeTextFile(tmp, JSON.stringify(results, null, 2) + "\n");
  await Deno.rename(tmp, RESULTS_FILE);
  console.log(values.json ? JSON.stringify(results, null, 2) : render(results));
  return 0;
}

if (import.meta.main) Deno.exit(await main());
