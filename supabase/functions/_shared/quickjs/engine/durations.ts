/** Parses the durations tasks give to sleep(): milliseconds, "90s", "2 hours", "1h 30m". */

const UNIT_MS: Record<string, number> = {
  ms: 1,
  millisecond: 1,
  milliseconds: 1,
  s: 1000,
  sec: 1000,
  secs: 1000,
  second: 1000,
  seconds: 1000,
  m: 60_000,
  min: 60_000,
  mins: 60_000,
  minute: 60_000,
  minutes: 60_000,
  h: 3_600_000,
  hr: 3_600_000,
  hrs: 3_600_000,
  hour: 3_600_000,
  hours: 3_600_000,
  d: 86_400_000,
  day: 86_400_000,
  days: 86_400_000,
  w: 604_800_000,
  week: 604_800_000,
  weeks: 604_800_000,
};

/** The longest sleep accepted: ten years. */
export const MAX_SLEEP_MS = 10 * 365 * 86_400_000;

/** Milliseconds for a duration; throws RangeError with a message meant for task authors. */
export function parseDuration(value: unknown): number {
  let ms: number;
  if (typeof value === "number") {
    ms = value;
  } else if (typeof value === "string") {
    const text = value.trim().toLowerCase();
    if (/^\d+(\.\d+)?$/.test(text)) {
      ms = Number(text);
    } else {
      const parts = [...text.matchAll(/(\d+(?:\.\d+)?)\s*([a-z]+)\s*(?:,|and)?\s*/g)];
      const consumed = parts.map((p) => p[0]).join("");
      if (parts.length === 0 || consumed.length !== text.length) {
        throw new RangeError(
          `cannot read the duration ${
            JSON.stringify(value)
          }: use milliseconds or forms like "90s", "15 minutes", "2 hours", "1h 30m"`,
        );
      }
      ms = 0;
      for (const [, amount, unit] of parts) {
        const factor = UNIT_MS[unit!];
        if (factor === undefined) {
          throw new RangeError(`unknown time unit "${unit}" in ${JSON.stringify(value)}`);
        }
        ms += Number(amount) * factor;
      }
    }
  } else {
    throw new RangeError('a duration is a number of milliseconds or a string such as "2 hours"');
  }
  if (!Number.isFinite(ms) || ms < 0) {
    throw new RangeError(`a duration must be a finite, non-negative time, got ${String(value)}`);
  }
  if (ms > MAX_SLEEP_MS) throw new RangeError("a sleep may last ten years at most");
  return Math.round(ms);
}
