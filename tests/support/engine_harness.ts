/**
 * Drives the real engine against a test database: publish a task from source, start a
 * run, and invoke until it ends, moving a virtual clock to each wake-up instead of waiting.
 */
import {
  type CustomTool,
  Engine,
  type EngineConfig,
  type EngineEvent,
  type InvocationResult,
  isFinal,
  type Json,
  type RunView,
  type Store,
  ToolRegistry,
  type ToolsOptions,
} from "../../supabase/functions/_shared/quickjs/mod.ts";
import { VirtualClock } from "../../supabase/functions/_shared/quickjs/dev.ts";

export interface Harness {
  store: Store;
  engine: Engine;
  clock: VirtualClock;
  events: EngineEvent[];
  invocations: InvocationResult[];
}

export function harness(
  store: Store,
  options: Partial<Omit<EngineConfig, "store" | "tools">> & {
    custom?: Record<string, CustomTool>;
    tools?: ToolsOptions;
  } = {},
): Harness {
  const clock = options.clock instanceof VirtualClock ? options.clock : new VirtualClock();
  const events: EngineEvent[] = [];
  const engine = new Engine({
    workerId: "test-worker",
    ...options,
    store,
    clock,
    tools: new ToolRegistry(store, { ...options.tools, custom: options.custom }),
    onEvent: (e) => {
      events.push(e);
      options.onEvent?.(e);
    },
  });
  return { store, engine, clock, events, invocations: [] };
}

let counter = 0;

/** Publishes `code` under a fresh name and starts a run of it. */
export async function startTask(
  h: Harness,
  code: string,
  input: Json = null,
  options: { name?: string; limits?: Record<string, number> } = {},
): Promise<string> {
  const name = options.name ?? `t${Date.now().toString(36)}_${++counter}`;
  await h.store.publishTask({ name, code, limits: options.limits });
  const run = await h.store.enqueueRun({ task: name, input, now: h.clock.now() });
  return run.id;
}

/** Invokes due runs until `runId` ends; jumps the clock to the next wake-up when idle. */
export async function runToEnd(
  h: Harness,
  runId: string,
  options: { maxInvocations?: number } = {},
): Promise<RunView> {
  const max = options.maxInvocations ?? 5000;
  for (let n = 0; n < max;) {
    const results = await h.engine.claimAndRun({ limit: 8 });
    h.invocations.push(...results);
    n += results.length;
    if (results.length > 0) continue;
    const run = await h.store.getRun(runId);
    if (!run) throw new Error(`run ${runId} vanished`);
    if (isFinal(run.status)) return run;
    const next = await h.store.nextWakeAt(h.clock.now());
    if (!next) {
      throw new Error(`run ${runId} is stuck: ${run.status}, nothing due, nothing to wake it`);
    }
    h.clock.jumpTo(next);
  }
  throw new Error(`run ${runId} did not end within ${max} invocations`);
}

/** Starts a task and runs it to the end. */
export async function runTaskToEnd(
  h: Harness,
  code: string,
  input: Json = null,
  options: { limits?: Record<string, number>; maxInvocations?: number } = {},
): Promise<RunView> {
  return await runToEnd(h, await startTask(h, code, input, options), options);
}
