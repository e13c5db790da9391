/**
 * Small helpers for store and database tests: a fixed clock passed as p_now, unique task
 * names, claiming one run, a stand-in snapshot, and asserting a StoreError's code.
 */
import assert from "node:assert/strict";
import {
  type ClaimedRun,
  DEFAULT_LIMITS,
  type Lease,
  SNAPSHOT_FORMAT,
  type SnapshotHeader,
  type Store,
  StoreError,
} from "../../supabase/functions/_shared/quickjs/mod.ts";

/** The tests' "now": far from the real clock, so only p_now decides what is due. */
export const T0 = new Date("2031-05-01T12:00:00.000Z");

/** T0 plus some seconds. */
export function at(seconds: number): Date {
  return new Date(T0.getTime() + seconds * 1000);
}

/** Milliseconds since the epoch of an ISO timestamp the database returned. */
export function ms(iso: string | undefined): number {
  assert.ok(iso, "expected a timestamp");
  return new Date(iso).getTime();
}

let counter = 0;
/** A task name no other test uses. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${++counter}-${Math.random().toString(36).slice(2, 8)}`;
}

export const TASK_CODE = "export default async function (input) { return input; }";

/** Publishes a task under a fresh name and returns the name. */
export async function newTask(store: Store, prefix = "task"): Promise<string> {
  const name = uniqueName(prefix);
  await store.publishTask({ name, code: TASK_CODE });
  return name;
}

export function leaseOf(run: ClaimedRun): Lease {
  return { runId: run.id, token: run.fencingToken };
}

/** Claims exactly the given run at `now`, failing the test if it is not claimable. */
export async function claimOne(
  store: Store,
  runId: string,
  now: Date,
  options: { worker?: string; leaseSeconds?: number } = {},
): Promise<ClaimedRun> {
  const claimed = await store.claimRuns({
    worker: options.worker ?? "worker-1",
    runId,
    leaseSeconds: options.leaseSeconds ?? 30,
    now,
  });
  assert.equal(claimed.length, 1, `run ${runId} should be claimable at ${now.toISOString()}`);
  assert.equal(claimed[0]!.id, runId);
  return claimed[0]!;
}

/** Enqueues a run of a new task at `now` and claims it: the usual start of a test. */
export async function startRun(
  store: Store,
  now: Date = T0,
  options: { task?: string; input?: unknown; worker?: string; leaseSeconds?: number } = {},
): Promise<ClaimedRun> {
  const task = options.task ?? await newTask(store);
  const run = await store.enqueueRun({
    task,
    input: (options.input ?? { n: 1 }) as never,
    now,
  });
  return await claimOne(store, run.id, now, options);
}

/** Asserts that `promise` rejects with a StoreError of this code (and status). */
export async function rejectsWith(
  promise: Promise<unknown>,
  code: string,
  status?: number,
): Promise<StoreError> {
  let caught: unknown;
  try {
    await promise;
  } catch (e) {
    caught = e;
  }
  assert.ok(caught, `expected a StoreError ${code}, but the call succeeded`);
  assert.ok(caught instanceof StoreError, `expected a StoreError, got ${caught}`);
  assert.equal(caught.code, code, caught.message);
  if (status !== undefined) assert.equal(caught.status, status);
  return caught;
}

/**
 * Bytes standing in for a VM snapshot: every byte value, NULs and high bytes included,
 * so a lossy encoding anywhere on the way (text, base64, bytea) shows.
 */
export function fakeSnapshotBytes(size = 9000): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 151 + (i >> 8)) & 0xff;
  return bytes;
}

/** A header shaped like sandbox/snapshot.ts's, parked on `parkedCalls`. */
export function fakeHeader(parkedCalls: number[], lastCallId: number): SnapshotHeader {
  return {
    format: SNAPSHOT_FORMAT,
    runId: "run-of-a-fake-header",
    keyId: null,
    variant: "asyncify",
    packageVersion: "0.32.0",
    wasmSha256: "ab".repeat(32),
    baseline: "cd".repeat(32),
    seedWords: [[1_050_000, 12345], [1_050_004, 67890]],
    memoryBytes: 16 * 65536,
    stackPointer: 5_242_880,
    heapBreak: 1_048_576,
    pointers: { runtime: 70_000, context: 71_000, global: 72_000, handles: [73_000, 73_008] },
    pageSize: 4096,
    pageCount: 22,
    bodyBytes: 22 * 4100,
    codec: "gzip",
    parkedCalls,
    lastCallId,
    limits: { ...DEFAULT_LIMITS },
    createdAt: T0.toISOString(),
  };
}
