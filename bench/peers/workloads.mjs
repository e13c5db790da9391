/**
 * The workloads of `deno task bench:peers`, written once for every system: a driver (ours.ts,
 * graphile.mjs, dbos.mjs) supplies an adapter (enqueue, pending, the worker's command line) and
 * calls runDriver(); this file starts the worker process, times it, and reads its memory from
 * /proc. Plain JavaScript on node: APIs, so Deno (ours) and node (the peers) run the same code.
 *
 * An adapter:
 *   name, versions                       what ran
 *   setup()                              schema and task definitions (before any worker)
 *   reset()                              forget all jobs/runs/workflows (between workloads)
 *   enqueue(kind, n, from)               queue n workflows of a kind, i = from … from + n - 1;
 *                                        returns their keys
 *   pending()                            workflows not finished yet
 *   failed()                             workflows that failed (the bench stops: a harness bug)
 *   bodyStartedAt(key, starts)           epoch ms when the body of a latency job began (starts:
 *                                        i → ms from the worker's "BENCH start i ms" lines)
 *   worker({ concurrency, kind })        { cmd, args, env, cwd } of ONE worker process
 *   close()
 * Kinds: trivial (returns at once), latency (returns Date.now()), steps (10 awaited steps),
 * sleep (one durable 1 s sleep).
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";

export const KINDS = ["trivial", "latency", "steps", "sleep"];

const sleepMs = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** VmHWM (peak) and VmRSS (now) of a process, in MB, from /proc/<pid>/status. */
export function memoryMb(pid) {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (field) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN);
  return { peak: kb("VmHWM") / 1024, rss: kb("VmRSS") / 1024 };
}

/**
 * CPU time (user + system) a process has used, in ms, from /proc/<pid>/stat; 100 clock ticks a
 * second (USER_HZ on Linux). Tells a worker that is busy itself from one waiting on Postgres.
 */
export function cpuMs(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // the fields after the command name, which is in parentheses and may hold spaces
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

export function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

const round = (x, digits = 1) => Math.round(x * 10 ** digits) / 10 ** digits;

/** One worker process: its pid, the "BENCH start i ms" lines it printed, its last stderr. */
class Worker {
  constructor({ cmd, args, env, cwd }) {
    this.starts = new Map();
    this.tail = [];
    this.exited = undefined;
    this.proc = spawn(cmd, args, {
      cwd,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.pid = this.proc.pid;
    this.exit = new Promise((resolve) => {
      this.proc.on("exit", (code, signal) => {
        this.exited = { code, signal };
        resolve(this.exited);
      });
    });
    createInterface({ input: this.proc.stdout }).on("line", (line) => {
      if (line.startsWith("BENCH start ")) {
        const [, , i, ms] = line.split(" ");
        this.starts.set(Number(i), Number(ms));
      }
    });
    createInterface({ input: this.proc.stderr }).on("line", (line) => {
      this.tail.push(line);
      if (this.tail.length > 30) this.tail.shift();
    });
  }

  memory() {
    return memoryMb(this.pid);
  }

  cpuMs() {
    return cpuMs(this.pid);
  }

  check() {
    if (this.exited) {
      throw new Error(
        `the worker exited (${JSON.stringify(this.exited)}):\n${this.tail.join("\n")}`,
      );
    }
  }

  async stop() {
    if (this.exited) return;
    this.proc.kill("SIGTERM");
    const done = await Promise.race([this.exit, sleepMs(15_000).then(() => undefined)]);
    if (!done) {
      this.proc.kill("SIGKILL");
      await this.exit;
    }
  }
}

/**
 * Polls until nothing is pending; throws on a failed workflow, a dead worker or a timeout.
 * onProgress(pending) sees every count polled.
 */
async function drain(adapter, worker, { timeoutMs, pollMs = 10, onProgress = () => {} }) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pending = await adapter.pending();
    onProgress(pending);
    if (pending === 0) break;
    worker.check();
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms with ${await adapter.pending()} pending`);
    }
    await sleepMs(pollMs);
  }
  const failed = await adapter.failed();
  if (failed) throw new Error(`${failed} workflow(s) failed:\n${worker.tail.join("\n")}`);
}

/** n workflows queued first, then one worker started: time from its start to all done. */
async function batch(adapter, kind, { concurrency, n, timeoutMs }) {
  await adapter.reset();
  await adapter.enqueue(kind, n, 0);
  const started = performance.now();
  const worker = new Worker(adapter.worker({ concurrency, kind }));
  // when the first workflow finished: what the worker's start-up cost, apart from the rest
  let firstMs;
  const onProgress = (pending) => {
    if (firstMs === undefined && pending < n) firstMs = performance.now() - started;
  };
  try {
    await drain(adapter, worker, { timeoutMs, onProgress });
    const ms = performance.now() - started;
    const { peak } = worker.memory();
    const cpu = worker.cpuMs();
    return {
      kind,
      concurrency,
      n,
      ms: round(ms),
      perSec: round((n / ms) * 1000, 2),
      firstDoneMs: round(firstMs),
      perSecAfterFirst: round(((n - 1) / (ms - firstMs)) * 1000, 2),
      peakRssMb: round(peak),
      workerCpuMs: cpu,
      workerCpuMsPerJob: round(cpu / n, 2),
    };
  } finally {
    await worker.stop();
  }
}

/** Waits until the worker is up: one workflow through it, and a few more to warm it. */
async function warm(adapter, worker, kind, { n, timeoutMs }) {
  await adapter.enqueue(kind, n, 1_000_000);
  await drain(adapter, worker, { timeoutMs });
}

/** Enqueue → the body starts, one at a time, the worker running and idle in between. */
async function latency(adapter, { concurrency, samples, gapMs, timeoutMs }) {
  await adapter.reset();
  const worker = new Worker(adapter.worker({ concurrency, kind: "latency" }));
  try {
    await warm(adapter, worker, "latency", { n: 5, timeoutMs });
    const ms = [];
    for (let i = 0; i < samples; i++) {
      await sleepMs(gapMs);
      const enqueuedAt = Date.now();
      const [key] = await adapter.enqueue("latency", 1, i);
      await drain(adapter, worker, { timeoutMs, pollMs: 5 });
      let started;
      for (
        let tries = 0;
        (started = await adapter.bodyStartedAt(key, worker.starts)) === undefined;
        tries++
      ) {
        if (tries > 500) throw new Error(`no start time for latency job ${i}`);
        await sleepMs(2);
      }
      ms.push(started - enqueuedAt);
    }
    ms.sort((a, b) => a - b);
    return {
      kind: "latency",
      concurrency,
      samples,
      p50: round(percentile(ms, 50)),
      p95: round(percentile(ms, 95)),
      min: round(ms[0]),
      max: round(ms[ms.length - 1]),
    };
  } finally {
    await worker.stop();
  }
}

/** Batches of ten-step workflows on one long-lived worker: throughput and memory per batch. */
async function steady(adapter, { concurrency, batches, perBatch, timeoutMs }) {
  await adapter.reset();
  const worker = new Worker(adapter.worker({ concurrency, kind: "steps" }));
  try {
    await warm(adapter, worker, "steps", { n: 1, timeoutMs });
    const rows = [];
    for (let b = 0; b < batches; b++) {
      const started = performance.now();
      const cpuBefore = worker.cpuMs();
      await adapter.enqueue("steps", perBatch, b * perBatch);
      await drain(adapter, worker, { timeoutMs });
      const ms = performance.now() - started;
      const { rss, peak } = worker.memory();
      rows.push({
        batch: b + 1,
        ms: round(ms),
        perSec: round((perBatch / ms) * 1000, 2),
        rssMb: round(rss),
        peakRssMb: round(peak),
        workerCpuMsPerWorkflow: round((worker.cpuMs() - cpuBefore) / perBatch, 2),
      });
    }
    return { kind: "steady", concurrency, batches, perBatch, rows };
  } finally {
    await worker.stop();
  }
}

/**
 * A driver's main: `<driver> <workload> [--concurrency N] [--n N] …`; prints one line,
 * `RESULT {json}`, and exits 0, or prints the error and exits 1.
 */
export async function runDriver(makeAdapter, args) {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      db: { type: "string" },
      concurrency: { type: "string", default: "8" },
      n: { type: "string", default: "200" },
      samples: { type: "string", default: "200" },
      "gap-ms": { type: "string", default: "20" },
      batches: { type: "string", default: "10" },
      "per-batch": { type: "string", default: "50" },
      "timeout-ms": { type: "string", default: "600000" },
    },
  });
  const [workload] = positionals;
  const num = (name) => Number(values[name]);
  const adapter = await makeAdapter({ db: values.db });
  try {
    const timeoutMs = num("timeout-ms");
    const concurrency = num("concurrency");
    let result;
    switch (workload) {
      case "setup":
        await adapter.setup();
        result = { versions: adapter.versions };
        break;
      case "trivial":
      case "steps":
      case "sleep":
        result = await batch(adapter, workload, { concurrency, n: num("n"), timeoutMs });
        break;
      case "latency":
        result = await latency(adapter, {
          concurrency,
          samples: num("samples"),
          gapMs: num("gap-ms"),
          timeoutMs,
        });
        break;
      case "steady":
        result = await steady(adapter, {
          concurrency,
          batches: num("batches"),
          perBatch: num("per-batch"),
          timeoutMs,
        });
        break;
      default:
        throw new Error(`unknown workload ${workload}`);
    }
    await adapter.reset();
    console.log(`RESULT ${JSON.stringify({ system: adapter.name, ...result })}`);
    return 0;
  } catch (e) {
    console.error(`${adapter.name} ${workload}: ${e?.stack ?? e}`);
    return 1;
  } finally {
    await adapter.close();
  }
}
