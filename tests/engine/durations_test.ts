/**
 * parseDuration: the durations tasks give to sleep(). Valid forms become milliseconds; bad
 * ones throw a RangeError whose message tells the task author what to write instead.
 */
import assert from "node:assert/strict";
import { MAX_SLEEP_MS, parseDuration } from "../../supabase/functions/_shared/quickjs/mod.ts";

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

Deno.test("parseDuration() takes a number as milliseconds", () => {
  assert.equal(parseDuration(0), 0);
  assert.equal(parseDuration(1500), 1500);
  assert.equal(parseDuration(2.4), 2, "rounded to whole milliseconds");
});

Deno.test("parseDuration() takes a string of digits as milliseconds", () => {
  assert.equal(parseDuration("250"), 250);
  assert.equal(parseDuration(" 42 "), 42);
});

Deno.test("parseDuration() reads units short and long, singular and plural, any case", () => {
  const cases: [string, number][] = [
    ["90s", 90 * SECOND],
    ["90 seconds", 90 * SECOND],
    ["1 second", SECOND],
    ["250ms", 250],
    ["15 minutes", 15 * MINUTE],
    ["15 min", 15 * MINUTE],
    ["1m", MINUTE],
    ["2 hours", 2 * HOUR],
    ["2h", 2 * HOUR],
    ["1 hr", HOUR],
    ["3 days", 3 * DAY],
    ["1d", DAY],
    ["2 weeks", 14 * DAY],
    ["1w", 7 * DAY],
    ["2 HOURS", 2 * HOUR],
  ];
  for (const [text, ms] of cases) assert.equal(parseDuration(text), ms, text);
});

Deno.test("parseDuration() adds up compound durations", () => {
  assert.equal(parseDuration("1h 30m"), 90 * MINUTE);
  assert.equal(parseDuration("1h30m"), 90 * MINUTE);
  assert.equal(parseDuration("1 hour and 30 minutes"), 90 * MINUTE);
  assert.equal(parseDuration("1 day, 2 hours"), DAY + 2 * HOUR);
  assert.equal(parseDuration("2m 30s 500ms"), 150_500);
});

Deno.test("parseDuration() takes fractions", () => {
  assert.equal(parseDuration("1.5 days"), 36 * HOUR);
  assert.equal(parseDuration("0.5s"), 500);
  assert.equal(parseDuration("2.5h"), 150 * MINUTE);
});

/** Asserts a RangeError whose message matches. */
function refuses(value: unknown, message: RegExp): void {
  assert.throws(() => parseDuration(value), (e: unknown) => {
    assert.ok(e instanceof RangeError, `${JSON.stringify(value)}: ${e}`);
    assert.match(e.message, message, JSON.stringify(value));
    return true;
  });
}

Deno.test("parseDuration() refuses strings it cannot read, showing the forms it can", () => {
  for (const bad of ["", "soon", "hours", "two hours", "1h 30", "1 h x", "1e3", "1.5.5s", "h1"]) {
    refuses(bad, /cannot read the duration .*"90s", "15 minutes", "2 hours", "1h 30m"/);
  }
});

Deno.test("parseDuration() names a unit it does not know", () => {
  refuses("3 fortnights", /unknown time unit "fortnights" in "3 fortnights"/);
  refuses("1 year", /unknown time unit "year"/);
  refuses("1h 5x", /unknown time unit "x"/);
});

Deno.test("parseDuration() refuses negative, infinite and not-a-number durations", () => {
  for (const bad of [-1, -0.6, Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY, Number.NaN]) {
    refuses(bad, /finite, non-negative/);
  }
  refuses("-5s", /cannot read the duration "-5s"/);
  refuses("-100", /cannot read the duration/);
});

Deno.test("parseDuration() refuses what is neither a number nor a string", () => {
  for (const bad of [null, undefined, true, {}, ["1h"], new Date()]) {
    refuses(bad, /a number of milliseconds or a string such as "2 hours"/);
  }
});

Deno.test("parseDuration() accepts ten years and refuses anything longer", () => {
  assert.equal(MAX_SLEEP_MS, 3650 * DAY);
  assert.equal(parseDuration("3650 days"), MAX_SLEEP_MS);
  assert.equal(parseDuration(MAX_SLEEP_MS), MAX_SLEEP_MS);
  refuses("3651 days", /ten years at most/);
  refuses(MAX_SLEEP_MS + 1, /ten years at most/);
  refuses("600 weeks", /ten years at most/);
  refuses(Number.MAX_SAFE_INTEGER, /ten years at most/);
});
