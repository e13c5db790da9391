/**
 * What Postgres can hold. A `jsonb` value cannot contain U+0000 or a lone surrogate, and a
 * `text` value cannot contain U+0000: a value the task makes with either is refused at the
 * call (the task can catch it) or fails the run with VALUE_NOT_STORABLE, instead of making
 * the store fail in the middle of a transition and leaving the run "running".
 */
import type { Json } from "../sandbox/vm.ts";

/** Where in `value` the first string Postgres refuses is (`$`, `$.a[2]`), or undefined. */
export function unstorablePath(value: Json | undefined, path = "$"): string | undefined {
  if (typeof value === "string") return storable(value) ? undefined : path;
  if (value === null || typeof value !== "object") return undefined;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = unstorablePath(value[i], `${path}[${i}]`);
      if (found) return found;
    }
    return undefined;
  }
  for (const key of Object.keys(value)) {
    if (!storable(key)) return `${path} (a key)`;
    const found = unstorablePath(value[key], `${path}.${key}`);
    if (found) return found;
  }
  return undefined;
}

/** True when Postgres stores the string as it is. */
export function storable(s: string): boolean {
  return s.isWellFormed() && !s.includes("\0");
}

/**
 * Text for humans (log lines, error messages) that Postgres can hold: U+0000 shown as
 * `\u0000`, lone surrogates as U+FFFD. Lossy on purpose: logs are read, not computed with.
 */
export function storableText(s: string): string {
  return storable(s) ? s : s.toWellFormed().replaceAll("\0", "\\u0000");
}

/** What a call, a result or a child's input fails with when it holds such a string. */
export function notStorableMessage(what: string, path: string): string {
  return `${what} holds a string Postgres cannot store at ${path} ` +
    "(U+0000 or a lone surrogate); encode it first, e.g. with encodeURIComponent";
}

/**
 * SQLSTATE class 22 (data exception) behind a store error: the database refused a value
 * (not the connection, not a rule), so trying again would fail the same way.
 */
export function isDataError(e: { cause?: unknown }): boolean {
  const sqlstate = (e.cause as { code?: unknown } | undefined)?.code;
  return typeof sqlstate === "string" && sqlstate.startsWith("22");
}
