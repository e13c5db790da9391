/** Measures how far each known C-loop attack runs past sliceMs: deno run -A --frozen tests/sandbox/c_loop_measure.ts [sliceMs] [name regexp]. */
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
};
const slice = Number(Deno.args[0] ?? 200);
const only = Deno.args[1];
const skip = (Deno.args[2] ?? "").split(",").filter(Boolean);
for (const [name, expr] of Object.entries(cases)) {
  if (only && !name.match(only)) continue;
  if (skip.some((s) => name.includes(s))) continue;
  const vm = await newVm({ sliceMs: slice });
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
