/**
 * Measures how far each known C-loop attack runs past sliceMs (the tests are in
 * c_loop_test.ts): deno run -A --frozen tests/sandbox/c_loop_measure.ts [sliceMs] [name
 * regexp] [skip,list]. A case named *_96 runs with memoryBytes 96 MiB. Run a case that might
 * hang under `timeout`: an unguarded one never ends.
 */
import { drive, newVm } from "./drive.ts";
const cases: Record<string, string> = {
  indexOf_3e7: `Array.prototype.indexOf.call({ length: 3e7 }, 1)`,
  lastIndexOf_3e7: `Array.prototype.lastIndexOf.call({ length: 3e7 }, 1)`,
  includes_3e7: `Array.prototype.includes.call({ length: 3e7 }, 1)`,
  join_arraylike_1e7: `Array.prototype.join.call({ length: 1e7 })`,
  join_sparse_1e9: `new Array(1e9).join()`,
  fill_arraylike_3e7: `Array.prototype.fill.call({ length: 3e7 }, 1)`,
  copyWithin_3e7: `Array.prototype.copyWithin.call({ length: 3e7 }, 1, 0)`,
  reverse_3e7: `Array.prototype.reverse.call({ length: 3e7 })`,
  every_3e7: `Array.prototype.every.call({ length: 3e7 }, () => true)`,
  forEach_3e7: `Array.prototype.forEach.call({ length: 3e7 }, () => {})`,
  some_3e7: `Array.prototype.some.call({ length: 3e7 }, () => false)`,
  reduce_3e7: `Array.prototype.reduce.call({ length: 3e7, 0: 1 }, (a) => a)`,
  find_3e7: `Array.prototype.find.call({ length: 3e7 }, () => false)`,
  sort_arraylike_3e7: `Array.prototype.sort.call({ length: 3e7 })`,
  indexOf_sparse_array: `const a = []; a.length = 3e7; a.indexOf(1)`,
  str_indexOf_quadratic: `"a".repeat(1e6).indexOf("a".repeat(5e5) + "b")`,
  str_includes_quadratic: `"a".repeat(1e6).includes("a".repeat(5e5) + "b")`,
  str_lastIndexOf_quadratic: `("b" + "a".repeat(1e6)).lastIndexOf("b" + "a".repeat(5e5))`,
  str_split_quadratic: `"a".repeat(1e6).split("a".repeat(5e5) + "b")`,
  str_replace_quadratic: `"a".repeat(1e6).replace("a".repeat(5e5) + "b", "")`,
  str_replaceAll_quadratic: `"a".repeat(1e6).replaceAll("a".repeat(5e5) + "b", "")`,
  regexp_backtrack: `/(a+)+b/.test("a".repeat(30))`,
  regexp_backtrack_long: `/(a|a)*b/.test("a".repeat(40))`,
  repeat_big: `"ab".repeat(1e7).length`,
  padStart_big: `"".padStart(3e7, "ab").length`,
  typed_fill: `new Uint8Array(3e7).fill(1)`,
  typed_indexOf: `new Uint8Array(3e7).indexOf(1)`,
  json_big: `JSON.stringify(new Array(3e6).fill("x")).length`,
  fill_dense_idiom: `new Array(3e6).fill(0).length`,
  sort_dense_1e6: `Array.from({ length: 1e6 }, (_, i) => i).sort().length`,
  array_from_map_idiom: `Array.from({ length: 1e6 }, (_, i) => i).length`,
  string_from_array: `String.fromCharCode.apply(null, new Array(60000).fill(65))`,
  array_from_arraylike: `Array.from({ length: 3e7 })`,
  concat_spreadable: `[].concat({ length: 3e7, [Symbol.isConcatSpreadable]: true })`,
  apply_arraylike: `Math.max.apply(null, { length: 1e6 })`,
  getter_toctou: `let n = 0; const o = { get length() { return n++ ? 2**53-1 : 0; } };
    Array.prototype.indexOf.call(o, 1)`,
  proxy_arraylike_toctou: `let n = 0;
    const p = new Proxy({}, { get: (t, k) => (k === "length" ? (n++ ? 2**53-1 : 0) : undefined) });
    Array.prototype.indexOf.call(p, 1)`,
  proxy_array_lenlie:
    `const p = new Proxy([], { get: (t, k) => (k === "length" ? 4e6 : t[k]), has: () => true });
    p.indexOf(1)`,
  sparse_real_96: `const a = []; a[12e6 - 1] = 1; a.indexOf(2)`,
  concat_sparse: `const a = []; a[4e6 - 1] = 1; [].concat(a).length`,
  fill_real_96: `new Array(12e6).fill(0).length`,
  array_from_96: `Array.from({ length: 12e6 }).length`,
  typed_from_arraylike: `new Uint8Array({ length: 3e7 }).length`,
  typed_from_static: `Uint8Array.from({ length: 3e7 }).length`,
  typed_set_arraylike: `new Uint8Array(3e7).set({ length: 3e7 })`,
  typed_join: `new Uint8Array(3e7).join().length`,
  json_sparse: `JSON.stringify(new Array(1e8)).length`,
  json_nested_sparse_96: `JSON.stringify({ a: [new Array(1e8)] }).length`,
  long_string_in_array:
    `const s = "a".repeat(1e5); new Array(1e5).fill(s).indexOf(s.slice(1) + "b")`,
  loop_of_allowed: `for (;;) Array.prototype.indexOf.call({ length: 150000 }, 1)`,
  loop_of_refused:
    `for (;;) { try { Array.prototype.indexOf.call({ length: 2**53-1 }, 1); } catch {} }`,
  reverse_filled_slow_96: `const a = []; for (let i = 1e6 - 1; i >= 0; i--) a[i] = 0; a.indexOf(1)`,
  // not guarded (see c_loop_guards.ts): one costly instruction per back-jump
  strict_eq_long_strings: `const s = "a".repeat(4e6); const t = s.slice(1) + "b";
    for (;;) { if (s === t) break; }`,
};
const slice = Number(Deno.args[0] ?? 200);
const only = Deno.args[1];
const skip = (Deno.args[2] ?? "").split(",").filter(Boolean);
for (const [name, expr] of Object.entries(cases)) {
  if (only && !name.match(only)) continue;
  if (skip.some((s) => name.includes(s))) continue;
  const vm = await newVm({
    sliceMs: slice,
    ...(name.endsWith("_96") ? { memoryBytes: 96 * 1024 * 1024 } : {}),
  });
  const start = performance.now();
  const r = drive(vm, `export default function () { ${expr}; return 1; }`);
  const ms = performance.now() - start;
  const s = r.state.kind === "failed"
    ? r.state.error.code + ": " + r.state.error.message.slice(0, 60)
    : r.state.kind;
  console.log(
    `${name.padEnd(28)} ${ms.toFixed(0).padStart(7)} ms  overshoot ${
      (Math.max(0, ms - slice)).toFixed(0).padStart(6)
    }  ${s}`,
  );
  try {
    vm.dispose();
  } catch { /* */ }
}
