#!/usr/bin/env -S deno run -A
/**
 * An emulation of Supabase's edge runtime around the `quickjs` function, for tests: one
 * process is one worker. It serves `export default { fetch }` over real HTTP, provides
 * `EdgeRuntime.waitUntil`, and enforces the platform's limits (DESIGN.md §9) the way the
 * runtime does: memory (V8 heap + external, with every WebAssembly.Memory at its full
 * size), CPU summed over the worker's life (soft: retire; hard: kill), and wall clock per
 * worker (half-life: retire; limit: `beforeunload`, then kill). Run it under Deno 2.1.4,
 * the Deno inside the runtime: `scripts/edge-runtime/run.sh` (it pins the version and the
 * lock file).
 *
 * Every event is one JSON line on stdout ({"event": "listening", "port": …} first, then
 * "retired", "beforeunload", "killed", "exit"); GET /__edge/stats answers the measurements.
 *
 * Environment (all optional): EDGE_PORT (0: any free port), EDGE_MEMORY_LIMIT_MB (256),
 * EDGE_CPU_SOFT_MS (2000), EDGE_CPU_HARD_MS (4000), EDGE_WALL_MS (150000: free tier; paid
 * 400000), EDGE_UNLOAD_GRACE_MS (1000: from beforeunload to the kill), EDGE_SAMPLE_MS (100; every WebAssembly.Memory is checked as it is made, too).
 * The function's own variables (SUPABASE_DB_URL, SUPABASE_SECRET_KEYS, …) pass through.
 */

const env = (name: string, fallback: number): number => {
  const value = Deno.env.get(name);
  return value ? Number(value) : fallback;
};

const MiB = 1024 * 1024;
const config = {
  port: env("EDGE_PORT", 0),
  memoryLimitBytes: env("EDGE_MEMORY_LIMIT_MB", 256) * MiB,
  cpuSoftMs: env("EDGE_CPU_SOFT_MS", 2_000),
  cpuHardMs: env("EDGE_CPU_HARD_MS", 4_000),
  wallMs: env("EDGE_WALL_MS", 150_000),
  unloadGraceMs: env("EDGE_UNLOAD_GRACE_MS", 1_000),
  sampleMs: env("EDGE_SAMPLE_MS", 100),
};

const startedAt = performance.now();

function emit(event: string, detail: Record<string, unknown> = {}): void {
  console.log(JSON.stringify({ event, ms: Math.round(performance.now() - startedAt), ...detail }));
}

// ---- memory: heap + external, WebAssembly.Memory at its full size ------------------------

/**
 * Deno's memoryUsage().external leaves WebAssembly.Memory out (measured on 2.1.4 and
 * 2.9.6); the runtime counts each one at its full size. So every Memory is counted here
 * from its creation until V8 collects it (a FinalizationRegistry), which is what V8's own
 * accounting of a backing store does.
 */
let wasmBytes = 0;
let wasmMemories = 0;
const NativeMemory = WebAssembly.Memory;
const collected = new FinalizationRegistry<{ bytes: number }>((held) => {
  wasmBytes -= held.bytes;
  wasmMemories--;
});
const externalCountsWasm = (() => {
  const before = Deno.memoryUsage().external;
  const probe = new NativeMemory({ initial: 256, maximum: 256 }); // 16 MiB
  const counted = Deno.memoryUsage().external - before >= 16 * MiB;
  void probe;
  return counted;
})();

class CountedMemory extends NativeMemory {
  constructor(descriptor: WebAssembly.MemoryDescriptor) {
    super(descriptor);
    const held = { bytes: this.buffer.byteLength };
    if (!externalCountsWasm) {
      wasmBytes += held.bytes;
      wasmMemories++;
      collected.register(this, held);
      (this as unknown as { held: typeof held }).held = held;
    }
    checkMemory("WebAssembly.Memory");
  }
  override grow(delta: number): number {
    const before = this.buffer.byteLength;
    const result = super.grow(delta);
    const held = (this as unknown as { held?: { bytes: number } }).held;
    if (held) {
      held.bytes += this.buffer.byteLength - before;
      wasmBytes += this.buffer.byteLength - before;
    }
    checkMemory("WebAssembly.Memory.grow");
    return result;
  }
}
(WebAssembly as { Memory: typeof WebAssembly.Memory }).Memory = CountedMemory;

let peak = { bytes: 0, heapUsed: 0, external: 0, wasm: 0, wasmMemories: 0 };

function memoryNow() {
  const usage = Deno.memoryUsage();
  return {
    bytes: usage.heapUsed + usage.external + wasmBytes,
    heapUsed: usage.heapUsed,
    external: usage.external,
    wasm: wasmBytes,
    wasmMemories,
  };
}

function checkMemory(where: string): void {
  const now = memoryNow();
  if (now.bytes > peak.bytes) peak = now;
  if (now.bytes > config.memoryLimitBytes) kill("memory", { where, ...now });
}

// ---- CPU: the worker's thread, summed over its life ---------------------------------------

/**
 * The runtime measures the worker's thread. Deno 2.1.4 has no process.cpuUsage(); Linux
 * gives the main thread's user + system time in /proc (clock ticks of 10 ms).
 */
const TICK_MS = 10;
function threadCpuMs(): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/self/task/${Deno.pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) * TICK_MS; // utime, stime
  } catch {
    return performance.now() - startedAt; // no /proc: wall time, an upper bound
  }
}
const cpuAtStart = threadCpuMs();
const cpuMs = () => threadCpuMs() - cpuAtStart;

// ---- the worker's life --------------------------------------------------------------------

let retired: string | undefined;
let unloading: string | undefined;
let inflight = 0;
const background = new Set<Promise<unknown>>();
let requests = 0;

(globalThis as { EdgeRuntime?: unknown }).EdgeRuntime = {
  waitUntil(work: Promise<unknown>): void {
    const kept = Promise.resolve(work).catch(() => {}).finally(() => {
      background.delete(kept);
      exitIfIdle();
    });
    background.add(kept);
  },
};

function stats() {
  return {
    pid: Deno.pid,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    config,
    externalCountsWasm,
    peak,
    now: memoryNow(),
    cpuMs: cpuMs(),
    wallMs: Math.round(performance.now() - startedAt),
    requests,
    inflight,
    background: background.size,
    retired: retired ?? null,
  };
}

/** No new requests from now on (the runtime sends them to a new worker). */
function retire(reason: string): void {
  if (retired) return;
  retired = reason;
  emit("retired", { reason, cpuMs: cpuMs() });
  exitIfIdle();
}

function exitIfIdle(): void {
  if (retired && inflight === 0 && background.size === 0) {
    emit("exit", { reason: unloading ?? retired, ...stats() });
    Deno.exit(0);
  }
}

function unload(reason: string): void {
  if (unloading) return;
  unloading = reason;
  emit("beforeunload", { reason });
  globalThis.dispatchEvent(new CustomEvent("beforeunload", { detail: { reason } }));
  setTimeout(() => kill(reason, {}), config.unloadGraceMs);
}

function kill(reason: string, detail: Record<string, unknown>): never {
  emit("killed", { reason, ...detail, ...stats() });
  Deno.exit(137);
}

// The samplers run on the worker's thread and cost it CPU (Deno.memoryUsage() ~0.3 ms a call):
// ~3 ms a second at these rates.
setInterval(() => checkMemory("sample"), config.sampleMs);
setInterval(() => {
  const cpu = cpuMs();
  if (cpu > config.cpuHardMs) kill("cpu", { cpuMs: cpu });
  if (cpu > config.cpuSoftMs) {
    retire("cpu");
    unload("cpu");
  }
}, config.sampleMs);
setTimeout(() => retire("wall_clock_half_life"), config.wallMs / 2);
setTimeout(() => unload("wall_clock"), Math.max(0, config.wallMs - config.unloadGraceMs));

// ---- serving -------------------------------------------------------------------------------

const edge = (await import("../../supabase/functions/quickjs/index.ts")).default as {
  fetch(request: Request): Promise<Response>;
};

Deno.serve({
  port: config.port,
  hostname: "127.0.0.1",
  onListen: ({ port }) => emit("listening", { port, deno: Deno.version.deno }),
}, async (request) => {
  const url = new URL(request.url);
  if (url.pathname === "/__edge/stats") return Response.json(stats());
  if (retired) {
    return Response.json({ error: { code: "WORKER_RETIRED", message: retired } }, { status: 503 });
  }
  requests++;
  inflight++;
  try {
    return await edge.fetch(request);
  } finally {
    inflight--;
    queueMicrotask(exitIfIdle);
  }
});
