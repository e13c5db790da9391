/**
 * jsonb keeps an object's keys sorted (shorter first, then by their UTF-8 bytes), not in the
 * order they were written; a task expects JSON.parse(JSON.stringify(v)). Values whose key
 * order jsonb would change travel as JSON text beside the jsonb (inputText, resultText,
 * valueText).
 */
import type { Json } from "../sandbox/vm.ts";

const utf8 = new TextEncoder();

/** jsonb's order of two keys: negative when `a` comes first. */
function jsonbKeyOrder(a: string, b: string): number {
  const x = utf8.encode(a);
  const y = utf8.encode(b);
  if (x.length !== y.length) return x.length - y.length;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
  return 0;
}

/** Whether jsonb gives back every object in `value` with its keys in the same order. */
export function jsonbKeepsKeyOrder(value: Json | undefined): boolean {
  if (value === null || typeof value !== "object") return true;
  if (Array.isArray(value)) return value.every(jsonbKeepsKeyOrder);
  const keys = Object.keys(value);
  for (let i = 1; i < keys.length; i++) {
    if (jsonbKeyOrder(keys[i - 1]!, keys[i]!) > 0) return false;
  }
  return keys.every((k) => jsonbKeepsKeyOrder(value[k]));
}

/**
 * The JSON text to store beside a jsonb value; undefined (the parameter is left out) when
 * jsonb keeps the value as it is, nearly always.
 */
export function orderedText(value: Json | undefined): string | undefined {
  return jsonbKeepsKeyOrder(value) ? undefined : JSON.stringify(value);
}

/** A journal entry with its result read from the text that kept its key order. */
export function withOrderedResult<T extends { result?: Json; resultText?: string }>(row: T): T {
  if (row.resultText === undefined) return row;
  const { resultText, ...rest } = row;
  return { ...rest, result: JSON.parse(resultText) } as T;
}

/** A run with its input read from the text that kept its key order. */
export function withOrderedInput<T extends { input?: Json; inputText?: string }>(run: T): T {
  if (run.inputText === undefined) return run;
  const { inputText, ...rest } = run;
  return { ...rest, input: JSON.parse(inputText) } as T;
}

/**
 * An operation's answer: a run or journal entry at its top has its result (and a run its
 * input) read in order.
 */
export function readOrderedResult<T>(answer: T): T {
  const row = answer as { resultText?: unknown; inputText?: unknown } | null;
  if (row === null || typeof row !== "object") return answer;
  const ordered = typeof row.inputText === "string"
    ? withOrderedInput(row as { inputText: string })
    : row;
  if (typeof row.resultText !== "string") return ordered as T;
  return withOrderedResult(ordered as { resultText: string }) as T;
}
