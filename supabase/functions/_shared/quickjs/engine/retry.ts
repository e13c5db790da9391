/**
 * Retry policies of registered services (quickjs.services.retry): which failures retry, and
 * how long the run waits before the next attempt (exponential backoff with jitter, capped).
 */
import type { Json } from "../sandbox/vm.ts";

export interface RetryPolicy {
  /** Attempts in all, the first included (1: no retry). */
  attempts: number;
  /** Wait before the second attempt. */
  initialDelayMs: number;
  /** No wait is longer than this. */
  maxDelayMs: number;
  /** Each wait is the one before times this. */
  multiplier: number;
  /** 0..1: each wait is drawn from ±jitter around its nominal value (spreads retry storms). */
  jitter: number;
  /** Error codes that retry. SERVICE_ERROR retries only without an HTTP status or on a 5xx. */
  codes: string[];
}

/**
 * A transient failure is a timeout, a connection error or a 5xx; a 4xx is the service's
 * answer and would be the same again.
 */
export const DEFAULT_RETRY_CODES: readonly string[] = Object.freeze([
  "SERVICE_TIMEOUT",
  "SERVICE_ERROR",
]);

/** 25 attempts at the 1-hour cap is a day of trying: more is a configuration mistake. */
const MAX_ATTEMPTS = 25;
/** A durable sleep may last ten years; a retry's wait a day (a longer one is not a retry). */
const MAX_DELAY_MS = 24 * 3600_000;

/**
 * Reads a service's retry column; null when it has none (one attempt). Bad fields throw a
 * message naming them (the call fails with BAD_RETRY_POLICY).
 */
export function parseRetryPolicy(raw: Record<string, Json> | null | undefined): RetryPolicy | null {
  if (raw === null || raw === undefined) return null;
  const num = (key: string, fallback: number, min: number, max: number): number => {
    const value = raw[key] ?? fallback;
    if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > max) {
      throw new Error(`retry.${key} must be a number from ${min} to ${max}`);
    }
    return value;
  };
  const codes = raw.codes ?? [...DEFAULT_RETRY_CODES];
  if (!Array.isArray(codes) || !codes.every((c) => typeof c === "string")) {
    throw new Error("retry.codes must be a list of error codes");
  }
  const initialDelayMs = num("initialDelayMs", 1_000, 0, MAX_DELAY_MS);
  return {
    attempts: Math.floor(num("attempts", 3, 1, MAX_ATTEMPTS)),
    initialDelayMs,
    maxDelayMs: num("maxDelayMs", Math.max(60_000, initialDelayMs), initialDelayMs, MAX_DELAY_MS),
    multiplier: num("multiplier", 2, 1, 10),
    jitter: num("jitter", 0.2, 0, 1),
    codes: codes as string[],
  };
}

/** Whether a failed attempt retries under the policy (attempts left aside). */
export function isRetryable(
  policy: RetryPolicy,
  error: { code?: string; data?: Json },
): boolean {
  if (error.code === undefined || !policy.codes.includes(error.code)) return false;
  if (error.code !== "SERVICE_ERROR") return true;
  const status = (error.data as { status?: unknown } | undefined)?.status;
  return typeof status !== "number" || status >= 500;
}

/**
 * The wait after failed attempt `attempt` (1-based): initialDelayMs × multiplier^(attempt-1),
 * capped at maxDelayMs, then spread by ±jitter. `random` is in [0, 1).
 */
export function retryDelayMs(
  policy: RetryPolicy,
  attempt: number,
  random: () => number = Math.random,
): number {
  const nominal = Math.min(
    policy.maxDelayMs,
    policy.initialDelayMs * policy.multiplier ** Math.max(0, attempt - 1),
  );
  const spread = nominal * policy.jitter * (2 * random() - 1);
  return Math.max(0, Math.min(policy.maxDelayMs, Math.round(nominal + spread)));
}
