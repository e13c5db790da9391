/**
 * What each route does: start, read, cancel and resume runs, and the cron tick. Each
 * handler parses its input with the schemas, calls the store or the engine, and answers.
 */
import { type Engine, isFinal, type RunView, type Store } from "../../_shared/quickjs/mod.ts";
import { type Caller, requireService } from "./auth.ts";
import { type BodyLimits, readJsonBody } from "./body.ts";
import { HttpError } from "./errors.ts";
import {
  callParams,
  cancelRunBody,
  completeCallBody,
  heartbeatCallBody,
  parse,
  resumeRunBody,
  runParams,
  type startRunBody,
  tickBody,
} from "./schemas.ts";

/** What handlers share: the app's dependencies with their defaults filled in. */
export interface HandlerDeps {
  store: Store;
  engine: Engine;
  body: BodyLimits;
  startRunSchema: ReturnType<typeof startRunBody>;
  runInBackground: (work: Promise<unknown>) => void;
  /** Longest POST /runs/:id/resume waits for its invocation before answering 202. */
  resumeWaitMs: number;
}

export interface HandlerCall {
  deps: HandlerDeps;
  request: Request;
  caller: Caller;
  /** The `:id` of the path, unparsed. */
  params: Record<string, string>;
}

export type Handler = (call: HandlerCall) => Promise<Response>;

/**
 * How often a waiting request looks at a run it is not executing itself (an idempotent
 * retry, or a run another worker claimed first): 4 cheap queries a second per waiting client.
 */
const POLL_MS = 250;

/** Runs claimed per tick when the body gives no limit: each may use up to its CPU budget. */
const DEFAULT_TICK_LIMIT = 5;

/** POST /runs: enqueue, start executing it in the background, optionally wait for the end. */
export const startRun: Handler = async ({ deps, request, caller }) => {
  const { store, engine } = deps;
  const body = parse(
    deps.startRunSchema,
    await readJsonBody(request, deps.body),
    "body",
  );
  const ownerId = ownerOf(caller);
  const enqueued = await store.enqueueRun({
    task: body.task,
    taskId: body.taskId,
    input: body.input ?? null,
    idempotencyKey: body.idempotencyKey ?? null,
    ownerId,
    // the clock the engine claims by: a run must be due for the claim right below
    now: engine.clock.now(),
    // this request executes the run right below: it must not be dispatched (to a worker
    // by NOTIFY, to another invocation by pg_net) a second time
    announce: false,
  });
  const created = enqueued.created === true;
  let execution: Promise<unknown> | undefined;
  if (created) {
    execution = engine.claimAndRun({ runId: enqueued.id }).then(async (results) => {
      // not claimed here (this worker is handing its runs over): announce it after all
      if (results.length === 0) await store.announceRun(enqueued.id);
      return results;
    });
    deps.runInBackground(execution);
  }
  const wait = body.wait ?? 0;
  const run = wait > 0
    ? await waitForRun(store, enqueued.id, ownerId, execution, wait, request.signal)
    : await mustGetRun(store, enqueued.id, ownerId);
  return Response.json({ run, created }, { status: wait > 0 && isFinal(run.status) ? 200 : 202 });
};

/** GET /runs/:id */
export const getRun: Handler = async ({ deps, caller, params }) => {
  const { id } = parse(runParams, params, "path");
  return Response.json({ run: await mustGetRun(deps.store, id, ownerOf(caller)) });
};

/** POST /runs/:id/cancel */
export const cancelRun: Handler = async ({ deps, request, caller, params }) => {
  const { id } = parse(runParams, params, "path");
  const body = parse(cancelRunBody, await readJsonBody(request, deps.body), "body");
  const run = await deps.store.cancelRun(id, {
    reason: body?.reason,
    ownerId: ownerOf(caller),
    now: deps.engine.clock.now(),
  });
  return Response.json({ run });
};

/**
 * POST /runs/:id/calls/:seq/complete (service role): an asynchronous service completes the
 * call it was sent, with the token that came with it; the run continues. A second
 * completion of the same call answers 200 and changes nothing (`alreadyCompleted`).
 */
export const completeCall: Handler = async ({ deps, request, caller, params }) => {
  requireService(caller);
  const { id, seq } = parse(callParams, params, "path");
  const body = parse(completeCallBody, await readJsonBody(request, deps.body), "body");
  // through the engine's store: with an operator key, the outcome is sealed like any other
  const { alreadyCompleted, ...call } = await deps.engine.store.completeCall({
    runId: id,
    seq,
    token: body.token,
    ...(body.error ? { error: body.error } : { result: body.result ?? null }),
  }, deps.engine.clock.now());
  return Response.json({ call, alreadyCompleted });
};

/**
 * POST /runs/:id/calls/:seq/heartbeat (service role): the service of an asynchronous call
 * says it still works on it, with optional progress; `proceed` false tells it to stop (the
 * call is settled, or its run is over). The answer shows the call's clock, not its arguments
 * or outcome. Progress is not sealed: it is the service's, not the task's.
 */
export const heartbeatCall: Handler = async ({ deps, request, caller, params }) => {
  requireService(caller);
  const { id, seq } = parse(callParams, params, "path");
  const body = parse(heartbeatCallBody, await readJsonBody(request, deps.body), "body");
  const beat = await deps.store.heartbeatCall({
    runId: id,
    seq,
    token: body.token,
    details: body.details,
  }, deps.engine.clock.now());
  const { status, deadlineAt, heartbeatAt, heartbeatDeadlineAt } = beat;
  return Response.json({
    call: { seq, status, deadlineAt, heartbeatAt, heartbeatDeadlineAt },
    alreadyCompleted: beat.alreadyCompleted,
    runStatus: beat.runStatus,
    proceed: beat.proceed,
  });
};

/**
 * POST /runs/:id/resume (service role): one invocation of a run that is due. The answer
 * comes within `resumeWaitMs` (25 s; the platform drops a request idle for 150 s, and an
 * invocation may take 140 s): the invocation's result when it ends by then, else 202 with
 * the run as it is, while the invocation goes on in the background.
 */
export const resumeRun: Handler = async ({ deps, request, caller, params }) => {
  requireService(caller);
  const { id } = parse(runParams, params, "path");
  parse(resumeRunBody, await readJsonBody(request, deps.body), "body");
  const execution = deps.engine.claimAndRun({ runId: id });
  deps.runInBackground(execution);
  const ended = await settledWithin(execution, deps.resumeWaitMs);
  const run = await mustGetRun(deps.store, id, null);
  if (!ended) return Response.json({ run, invocation: null }, { status: 202 });
  const [invocation] = ended.value;
  if (!invocation) throw new HttpError(409, "NOT_DUE", notDueMessage(run));
  return Response.json({ run, invocation });
};

/** POST /tick (service role): wake what is due, then run a batch of due runs. */
export const tick: Handler = async ({ deps, request, caller }) => {
  requireService(caller);
  const body = parse(tickBody, await readJsonBody(request, deps.body), "body");
  const { store, engine } = deps;
  const woken = await store.tick(engine.clock.now());
  const results = await engine.claimAndRun({ limit: body?.limit ?? DEFAULT_TICK_LIMIT });
  return Response.json({
    tick: woken,
    invocations: results.map(({ runId, task, status }) => ({ runId, task, status })),
  });
};

/** Users act on their own runs only; the service role on all. */
function ownerOf(caller: Caller): string | null {
  return caller.role === "user" ? caller.userId : null;
}

async function mustGetRun(store: Store, id: string, ownerId: string | null): Promise<RunView> {
  const run = await store.getRun(id, { ownerId });
  // another user's run answers exactly like a missing one
  if (!run) throw new HttpError(404, "RUN_NOT_FOUND", `run ${id} does not exist`);
  return run;
}

/**
 * Waits up to `ms` for this request's own execution of the run, then, while the run is
 * queued or running elsewhere, looks again until it ends or the time is up. A suspended run
 * will not end soon, so it is returned at once, and so is the run when the client has gone.
 */
async function waitForRun(
  store: Store,
  id: string,
  ownerId: string | null,
  execution: Promise<unknown> | undefined,
  ms: number,
  /** Aborts when the client goes away: nobody is left to answer, so stop looking. */
  gone: AbortSignal,
): Promise<RunView> {
  const deadline = Date.now() + ms;
  // a failed execution is logged by runInBackground; the run's state below says the rest
  if (execution) await within(execution.catch(() => {}), ms);
  let run = await mustGetRun(store, id, ownerId);
  while (
    (run.status === "queued" || run.status === "running") && Date.now() < deadline && !gone.aborted
  ) {
    await delay(Math.min(POLL_MS, deadline - Date.now()));
    run = await mustGetRun(store, id, ownerId);
  }
  return run;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * `{ value }` when `work` resolves within `ms`, undefined when it is still going; rejects
 * when it rejects in time.
 */
async function settledWithin<T>(work: Promise<T>, ms: number): Promise<{ value: T } | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      work.then((value) => ({ value })),
      new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves when `work` settles or after `ms`, whichever is first. */
async function within(work: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([work, new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

function notDueMessage(run: RunView): string {
  const prefix = `run ${run.id} is not due: it is ${run.status}`;
  switch (run.status) {
    case "suspended":
      return run.wakeAt ? `${prefix} until ${run.wakeAt}` : `${prefix}, waiting for a child run`;
    case "running":
      return `${prefix} (leased by ${run.leaseOwner} until ${run.leaseExpiresAt})`;
    case "queued":
      return `${prefix}, not before its start time`;
    default:
      return `${prefix} and will not run again`;
  }
}
