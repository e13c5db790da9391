/**
 * The states of a run and of a host call. Mirrored by the Postgres enums
 * quickjs.run_status and quickjs.call_status (a test checks they agree).
 */

export const RUN_STATUS = Object.freeze(
  {
    /** Claimable once run_at has passed. */
    queued: "queued",
    /** Leased to one worker, which holds the current fencing token. */
    running: "running",
    /** The VM is saved; it wakes at wake_at or when a child run ends. */
    suspended: "suspended",
    completed: "completed",
    failed: "failed",
    cancelled: "cancelled",
  } as const,
);
export type RunStatus = typeof RUN_STATUS[keyof typeof RUN_STATUS];

export const FINAL_RUN_STATUSES: readonly RunStatus[] = Object.freeze([
  "completed",
  "failed",
  "cancelled",
]);

export function isFinal(status: RunStatus): boolean {
  return FINAL_RUN_STATUSES.includes(status);
}

export const CALL_STATUS = Object.freeze(
  {
    /** Recorded and waiting: a durable sleep or a child run. */
    pending: "pending",
    /** Being executed; attempts counts executions. */
    started: "started",
    succeeded: "succeeded",
    failed: "failed",
  } as const,
);
export type CallStatus = typeof CALL_STATUS[keyof typeof CALL_STATUS];
