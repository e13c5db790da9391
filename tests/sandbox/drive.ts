/**
 * Drives a TaskVm to the end with a scripted host, so a sandbox test reads as: the task,
 * how the host answers each call, and what the run ended as. The caller owns the VM and
 * disposes it (`using vm = await newVm()`), with QuickJS's teardown on (setVmTeardown), so a
 * leaked handle fails the test.
 */
import assert from "node:assert/strict";
import {
  type BuildVariant,
  type CallOutcome,
  type HostCall,
  type Json,
  type LogEntry,
  resolveLimits,
  type SandboxLimits,
  type TaskContext,
  TaskVm,
  type VmState,
} from "../../supabase/functions/_shared/quickjs/mod.ts";
import { setVmTeardown } from "../../supabase/functions/_shared/quickjs/sandbox/vm.ts";

// the sandbox tests run QuickJS's teardown on every dispose: a leaked object aborts it
setVmTeardown(true);

/** How the scripted host answers a call; undefined leaves it parked. */
export type Host = (call: HostCall) => CallOutcome | undefined;

export interface DriveOptions {
  input?: Json;
  /** The task's ctx; TEST_CONTEXT by default. */
  context?: TaskContext;
  filename?: string;
  /** Answers every call; by default each call resolves with `{ id, service, path, args }`. */
  host?: Host;
  /** Settle the calls of each batch (the calls made between two parks) last first. */
  reverse?: boolean;
  /** Fail the test after this many settles: a guard against a task that never ends. */
  maxSettles?: number;
}

export interface Driven {
  /** The state the run ended in: done, failed, or parked on calls the host left open. */
  state: VmState;
  /** Every call the task made, in the order it made them. */
  calls: HostCall[];
  logs: LogEntry[];
}

export const TEST_CONTEXT: TaskContext = { runId: "run-1", task: "test-task", attempt: 1 };

/** A fresh VM with the default limits, overridden by `limits`. */
export function newVm(
  limits: Partial<SandboxLimits> = {},
  variant?: BuildVariant,
): Promise<TaskVm> {
  return TaskVm.create({ limits: resolveLimits(limits), ...(variant ? { variant } : {}) });
}

/** Resolves a call with a value. */
export function ok(value?: Json): CallOutcome {
  return value === undefined ? { ok: true } : { ok: true, value };
}

/** Rejects a call with an error the task sees as an Error with this name, message and code. */
export function fail(name: string, message: string, code?: string): CallOutcome {
  return { ok: false, error: code === undefined ? { name, message } : { name, message, code } };
}

/** The default host: echoes the call back, so the task can check what the host saw. */
export const echo: Host = (call) =>
  ok({ id: call.id, service: call.service, path: call.path, args: call.args });

/**
 * Starts `code` in `vm` and answers calls until the run is done, failed, or parked on calls
 * the host does not answer. Each settle is followed by a full drain of the job queue, as
 * the engine does it.
 */
export function drive(vm: TaskVm, code: string, options: DriveOptions = {}): Driven {
  const host = options.host ?? echo;
  const calls: HostCall[] = [];
  const logs: LogEntry[] = [];
  let settles = 0;
  let state = vm.start(
    { code, filename: options.filename ?? "task.js" },
    options.input ?? null,
    options.context ?? TEST_CONTEXT,
  );
  for (;;) {
    logs.push(...vm.takeLogs());
    const batch = vm.takeCalls();
    calls.push(...batch);
    if (state.kind !== "parked") break;
    const answers = batch.flatMap((call) => {
      const outcome = host(call);
      return outcome ? [{ id: call.id, outcome }] : [];
    });
    if (options.reverse) answers.reverse();
    if (answers.length === 0) break;
    for (const { id, outcome } of answers) {
      assert.ok(++settles <= (options.maxSettles ?? 100_000), "the task made too many calls");
      assert.equal(vm.settle(id, outcome), true, `call ${id} was not parked in the VM`);
      state = vm.run();
    }
  }
  logs.push(...vm.takeLogs());
  return { state, calls, logs };
}

/** The run's result, failing the test with the run's error if it did not complete. */
export function resultOf(driven: Driven): Json {
  const { state } = driven;
  if (state.kind === "done") return state.result;
  assert.fail(`expected the task to complete; it ended ${JSON.stringify(state)}`);
}

/** The run's error, failing the test if the run did not fail. */
export function errorOf(driven: Driven) {
  const { state } = driven;
  if (state.kind === "failed") return state.error;
  assert.fail(`expected the task to fail; it ended ${JSON.stringify(state)}`);
}

/** Reads a fixture task program from tests/fixtures/tasks. */
export function fixture(name: string): string {
  return Deno.readTextFileSync(new URL(`../fixtures/tasks/${name}`, import.meta.url));
}
