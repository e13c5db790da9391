/** Human output for the operator CLIs: aligned tables, byte sizes, shortened values. */

/**
 * Rows as an aligned table under upper-case headings; the last column is not padded.
 * Cells are strings ("" for none).
 */
export function table(headings: string[], rows: string[][], indent = ""): string[] {
  const widths = headings.map((h, i) =>
    Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length))
  );
  const line = (cells: string[]) =>
    indent + cells.map((c, i) => i === cells.length - 1 ? c : c.padEnd(widths[i]!)).join("  ")
      .trimEnd();
  return [line(headings.map((h) => h.toUpperCase())), ...rows.map(line)];
}

/** Label/value lines with the values aligned; entries whose value is undefined are left out. */
export function fields(entries: [string, string | undefined][], indent = ""): string[] {
  const shown = entries.filter((e): e is [string, string] => e[1] !== undefined);
  const width = Math.max(0, ...shown.map(([label]) => label.length));
  return shown.map(([label, value]) => `${indent}${label.padEnd(width)}  ${value}`);
}

/** 83213 → "81.3 KiB". */
export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** JSON text of a value, cut to `max` characters with an ellipsis. */
export function shorten(value: unknown, max = 80): string {
  let text: string;
  try {
    text = typeof value === "string" ? JSON.stringify(value) : JSON.stringify(value) ?? "undefined";
  } catch {
    text = String(value);
  }
  return text.length <= max ? text : `${text.slice(0, Math.max(0, max - 1))}…`;
}

/** A duration between now and an ISO time: "in 1h 59m", "3m 2s ago". */
export function relative(iso: string | null | undefined, now: Date = new Date()): string {
  if (!iso) return "";
  const ms = Date.parse(iso) - now.getTime();
  const abs = Math.abs(ms);
  const s = Math.floor(abs / 1000);
  const parts = s >= 86_400
    ? [`${Math.floor(s / 86_400)}d`, `${Math.floor((s % 86_400) / 3600)}h`]
    : s >= 3600
    ? [`${Math.floor(s / 3600)}h`, `${Math.floor((s % 3600) / 60)}m`]
    : s >= 60
    ? [`${Math.floor(s / 60)}m`, `${s % 60}s`]
    : [`${s}s`];
  return ms >= 0 ? `in ${parts.join(" ")}` : `${parts.join(" ")} ago`;
}

/** An ISO time with how far it is from now: "2026-11-24T09:00:00.000Z (in 2h 0m)". */
export function when(iso: string | null | undefined, now: Date = new Date()): string | undefined {
  return iso ? `${iso} (${relative(iso, now)})` : undefined;
}

/** Milliseconds with one decimal below 10 ms: "4.2 ms", "123 ms". */
export function millis(ms: number): string {
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}
