/**
 * Real `deno task worker` processes for the reliability tests: started with short leases,
 * killed, paused and resumed by signal, their output kept for the failure message. Also the
 * switch between a test's bounded CI version and its long one (QUICKJS_RELIABILITY=1).
 */
import { ROOT } from "./cli.ts";

/** `deno task test:reliability` sets it: run the long versions. */
export const LONG = Deno.env.get("QUICKJS_RELIABILITY") === "1";

export interface WorkerSpec {
  db: string;
  id: string;
  /** 3 is the least the worker accepts; the lease runs out 3 s after a worker froze or died. */
  leaseSeconds?: number;
  pollMs?: number;
  concurrency?: number;
  env?: Record<string, string>;
}

export class WorkerProcess {
  readonly id: string;
  readonly child: Deno.ChildProcess;
  readonly startedAt = Date.now();
  stdout = "";
  stderr = "";
  /** When it was killed (SIGKILL), if it was. */
  killedAt: number | undefined;
  readonly #done: Promise<Deno.CommandStatus>;

  constructor(spec: WorkerSpec) {
    this.id = spec.id;
    this.child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--frozen",
        `${ROOT}scripts/worker.ts`,
        "--db",
        spec.db,
        "--worker-id",
        spec.id,
        "--lease-seconds",
        String(spec.leaseSeconds ?? 3),
        "--poll-ms",
        String(spec.pollMs ?? 500),
        "--concurrency",
        String(spec.concurrency ?? 4),
        "--json",
      ],
      cwd: ROOT,
      env: spec.env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const drain = async (stream: ReadableStream<Uint8Array>, to: "stdout" | "stderr") => {
      for await (const text of stream.pipeThrough(new TextDecoderStream())) this[to] += text;
    };
    const reading = Promise.all([
      drain(this.child.stdout, "stdout"),
      drain(this.child.stderr, "stderr"),
    ]);
    this.#done = this.child.status.then(async (status) => {
      await reading.catch(() => {});
      return status;
    });
  }

  get pid(): number {
    return this.child.pid;
  }

  /** The JSON lines it printed, one per invocation. */
  invocations(): { runId: string; status: string; error?: string }[] {
    return this.stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
  }

  get status(): Promise<Deno.CommandStatus> {
    return this.#done;
  }

  signal(signal: Deno.Signal): void {
    if (signal === "SIGKILL") this.killedAt ??= Date.now();
    try {
      this.child.kill(signal);
    } catch {
      // already gone
    }
  }

  /** SIGKILL and wait for the end. */
  async kill(): Promise<void> {
    this.signal("SIGKILL");
    await this.#done;
  }

  /** SIGTERM (hand the runs over), then SIGKILL after `graceMs`. */
  async stop(graceMs = 10_000): Promise<Deno.CommandStatus> {
    this.signal("SIGCONT");
    this.signal("SIGTERM");
    const timer = setTimeout(() => this.signal("SIGKILL"), graceMs);
    try {
      return await this.#done;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The last lines of stderr, for a failure message. */
  tail(lines = 15): string {
    return `--- ${this.id} stderr ---\n${this.stderr.trim().split("\n").slice(-lines).join("\n")}`;
  }
}

export function startWorker(spec: WorkerSpec): WorkerProcess {
  return new WorkerProcess(spec);
}

/** Polls `check` every 50 ms until it returns something truthy. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false | null> | T | undefined | false | null,
  timeoutMs: number,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Where the i-th of n faults is dealt, as a count of service requests out of the `total`
 * expected: spread evenly over the first 90%, so every fault lands under load however fast
 * the machine is.
 */
export function faultAt(i: number, n: number, total: number): number {
  return Math.max(1, Math.floor((total * 0.9 * (i + 1)) / (n + 1)));
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A seeded pseudo-random generator (mulberry32), so a failing schedule can be repeated. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
