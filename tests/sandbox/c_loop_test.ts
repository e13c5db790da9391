/**
 * Hostile tasks against built-ins whose loops run inside QuickJS's C code, where the
 * interrupt handler is never polled (sandbox/c_loop_guards.ts). Each test is one attack:
 * it must end with its named code, and it must not run much past the slice. The bound is
 * generous (OVERSHOOT_MS) so a loaded machine does not fail it, but an unguarded loop
 * (seconds, or never) does. `deno run -A --frozen tests/sandbox/c_loop_measure.ts` prints
 * the measured overshoot of every case.
 */
import assert from "node:assert/strict";
import { drive, type Driven, errorOf, newVm, resultOf } from "./drive.ts";

const SLICE_MS = 200;
/** Time past the slice an attack may take; unguarded they took 2 s to forever. */
const OVERSHOOT_MS = 1000;
const MiB = 1024 * 1024;

async function attack(
  body: string,
  memoryMiB?: number,
): Promise<{ run: Driven; overshootMs: number }> {
  using vm = await newVm({
    sliceMs: SLICE_MS,
    ...(memoryMiB === undefined ? {} : { memoryBytes: memoryMiB * MiB }),
  });
  const start = performance.now();
  const run = drive(vm, `export default async function () { ${body}; return 1; }`);
  return { run, overshootMs: Math.max(0, performance.now() - start - SLICE_MS) };
}

/**
 * One test per attack: it fails with `code` (one of them, for an attack that fills memory
 * as fast as it spends time: which limit it meets first depends on the machine's speed)
 * within OVERSHOOT_MS past the slice.
 */
function attackTest(
  name: string,
  body: string,
  code: string | string[],
  memoryMiB?: number,
): void {
  Deno.test(name, async () => {
    const { run, overshootMs } = await attack(body, memoryMiB);
    const codes = typeof code === "string" ? [code] : code;
    assert.ok(codes.includes(errorOf(run).code), `${errorOf(run).code}: ${errorOf(run).message}`);
    assert.ok(overshootMs < OVERSHOOT_MS, `ran ${overshootMs.toFixed(0)} ms past the slice`);
  });
}

const T = "SANDBOX_TIMEOUT";

attackTest(
  "Array.prototype.indexOf on an array-like of length 2**53-1 fails SANDBOX_TIMEOUT within the slice",
  `Array.prototype.indexOf.call({ length: 2 ** 53 - 1 }, 1)`,
  T,
);
attackTest(
  "Array.prototype.indexOf on an array-like of length 3e7 fails SANDBOX_TIMEOUT within the slice",
  `Array.prototype.indexOf.call({ length: 3e7 }, 1)`,
  T,
);
for (
  const name of ["lastIndexOf", "includes", "join", "reverse", "every", "some", "forEach", "find"]
) {
  attackTest(
    `Array.prototype.${name} on an array-like of length 3e7 fails SANDBOX_TIMEOUT within the slice`,
    `Array.prototype.${name}.call({ length: 3e7 }, () => false)`,
    T,
  );
}
attackTest(
  "Array.prototype.fill on an array-like of length 3e7 fails SANDBOX_TIMEOUT (or SANDBOX_MEMORY) within the slice",
  `Array.prototype.fill.call({ length: 3e7 }, 1)`,
  [T, "SANDBOX_MEMORY"],
);
attackTest(
  "Array.prototype.copyWithin on an array-like of length 3e7 fails SANDBOX_TIMEOUT within the slice",
  `Array.prototype.copyWithin.call({ length: 3e7 }, 1, 0)`,
  T,
);
attackTest(
  "Array.prototype.sort on an array-like of length 3e7 fails SANDBOX_TIMEOUT within the slice",
  `Array.prototype.sort.call({ length: 3e7 })`,
  T,
);
attackTest(
  "a length getter that answers 0 to the guard and 2**53-1 to the built-in fails SANDBOX_TIMEOUT within the slice",
  `let n = 0; const o = { get length() { return n++ ? 2 ** 53 - 1 : 0; } };
   if (Array.prototype.indexOf.call(o, 1) !== -1) throw new Error("wrong answer");
   Array.prototype.indexOf.call({ length: 2 ** 53 - 1 }, 1)`,
  T,
);
attackTest(
  "a Proxy array-like whose length changes between reads fails SANDBOX_TIMEOUT within the slice",
  `let n = 0;
   const p = new Proxy({}, { get: (t, k) => (k === "length" ? (n++ ? 2 ** 53 - 1 : 0) : undefined) });
   Array.prototype.indexOf.call(p, 1);
   Array.prototype.indexOf.call(new Proxy({}, { get: (t, k) => (k === "length" ? 2 ** 53 - 1 : undefined) }), 1)`,
  T,
);
attackTest(
  "a Proxy of an Array that lies about its length and holes fails SANDBOX_TIMEOUT within the slice",
  `const p = new Proxy([], { get: (t, k) => (k === "length" ? 4e6 : t[k]), has: () => true });
   p.indexOf(1)`,
  T,
);
attackTest(
  "Array.prototype.indexOf on a sparse Array of 12e6 (its last index set) fails SANDBOX_TIMEOUT within the slice",
  `const a = []; a[12e6 - 1] = 1; a.indexOf(2)`,
  T,
  96,
);
attackTest(
  "Array.prototype.concat of a sparse Array of 4e6 fails SANDBOX_TIMEOUT within the slice",
  `const a = []; a[4e6 - 1] = 1; [].concat(a)`,
  T,
);
attackTest(
  "concat of an array-like whose isConcatSpreadable getter changes between reads fails SANDBOX_TIMEOUT within the slice",
  `let n = 0;
   [].concat({ length: 2 ** 53 - 1, get [Symbol.isConcatSpreadable]() { return n++ > 0; } })`,
  T,
);
attackTest(
  "Array.from of an object whose Symbol.iterator getter vanishes on the second read fails SANDBOX_TIMEOUT within the slice",
  `let n = 0;
   Array.from({ length: 2 ** 53 - 1, get [Symbol.iterator]() { return n++ ? undefined : function* () {}; } })`,
  T,
);
attackTest(
  "new Set of the values of a sparse Array of length 2**32-1 fails SANDBOX_TIMEOUT within the slice",
  `new Set(new Array(2 ** 32 - 1).values())`,
  T,
);
attackTest(
  "join of a sparse Array of length 1e9 fails SANDBOX_TIMEOUT within the slice",
  `new Array(1e9).join()`,
  T,
);
// 12e6 elements of 8 bytes fill the 96 MiB heap about when the slice ends: whichever limit
// the machine's speed reaches first ends it (the fresh and the reused VM's memory paths
// differ in speed by a little, which is enough to flip it)
attackTest(
  "new Array(12e6).fill(0) fails SANDBOX_TIMEOUT (or SANDBOX_MEMORY) within the slice",
  `new Array(12e6).fill(0)`,
  [T, "SANDBOX_MEMORY"],
  96,
);
attackTest(
  "Array.from an array-like of length 12e6 fails SANDBOX_TIMEOUT within the slice",
  `Array.from({ length: 12e6 })`,
  T,
  96,
);
attackTest(
  "a loop of allowed array-like searches fails SANDBOX_TIMEOUT within the slice",
  `for (;;) Array.prototype.indexOf.call({ length: 150000 }, 1)`,
  T,
);
attackTest(
  "a loop that catches every refusal fails SANDBOX_TIMEOUT within the slice",
  `for (;;) { try { Array.prototype.indexOf.call({ length: 2 ** 53 - 1 }, 1); } catch {} }`,
  T,
);
attackTest(
  "Array.prototype.indexOf of a 1e5-character string in 1e5 copies of another fails SANDBOX_TIMEOUT within the slice",
  `const s = "a".repeat(1e5); new Array(1e5).fill(s).indexOf(s.slice(1) + "b")`,
  T,
);
attackTest(
  "new Uint8Array of an array-like of length 3e7 fails SANDBOX_TIMEOUT within the slice",
  `new Uint8Array({ length: 3e7 })`,
  T,
);
attackTest(
  "Uint8Array.from an array-like of length 3e7 fails SANDBOX_TIMEOUT within the slice",
  `Uint8Array.from({ length: 3e7 })`,
  T,
);
attackTest(
  "TypedArray.prototype.set from an array-like of length 3e7 fails SANDBOX_TIMEOUT within the slice",
  `new Uint8Array(3e7).set({ length: 3e7 })`,
  T,
);
attackTest(
  "join of a Uint8Array of 3e7 fails SANDBOX_TIMEOUT within the slice",
  `new Uint8Array(3e7).join()`,
  T,
);
attackTest(
  "JSON.stringify of a sparse Array of 1e8 nested in an object fails SANDBOX_TIMEOUT within the slice",
  `JSON.stringify({ a: [new Array(1e8)] })`,
  T,
  96,
);
attackTest(
  "a quadratic String.prototype.indexOf fails SANDBOX_TIMEOUT within the slice",
  `"a".repeat(1e6).indexOf("a".repeat(5e5) + "b")`,
  T,
);
attackTest(
  "a quadratic String.prototype.includes fails SANDBOX_TIMEOUT within the slice",
  `"a".repeat(1e6).includes("a".repeat(5e5) + "b")`,
  T,
);
for (const name of ["split", "replace", "replaceAll"]) {
  attackTest(
    `a quadratic String.prototype.${name} fails SANDBOX_TIMEOUT within the slice`,
    `"a".repeat(1e6).${name}("a".repeat(5e5) + "b", "")`,
    T,
  );
}
attackTest(
  "a catastrophically backtracking regexp fails SANDBOX_TIMEOUT within the slice",
  `/(a|a)*b/.test("a".repeat(40))`,
  T,
);
attackTest(
  "String.prototype.padStart to 3e7 characters fails SANDBOX_MEMORY within the slice",
  `"".padStart(3e7, "ab")`,
  "SANDBOX_MEMORY",
);

// ---- what the guards must not change ------------------------------------------------

Deno.test("guarded built-ins give the same answers on ordinary values", async () => {
  using vm = await newVm();
  const run = drive(
    vm,
    `export default function () {
      const o = { length: 3, 0: "a", 1: "b", 2: "c" };
      const p = new Proxy(o, {});
      const big = new Array(3e5).fill(7);
      return [
        Array.prototype.indexOf.call(o, "b"), Array.prototype.join.call(p, "-"),
        Array.prototype.fill.call({ length: 2 }, 0) instanceof Array,
        Array.prototype.reverse.call(p) === p, big.indexOf(7, 5), big.length,
        new Array(200001).fill(1, 5, 199999).lastIndexOf(1), [3, 1, 2].sort().join(),
        Array.from({ length: 3 }, (_, i) => i * 2).join(), [].concat([1], { length: 1, 0: 2 }, 3).length,
        new Uint8Array({ length: 3, 0: 1, 1: 2, 2: 3 }).join(), Uint8Array.from([1, 2]).length,
        new Uint8Array(2) instanceof Uint8Array, new Uint8Array(1).constructor === Uint8Array,
        JSON.stringify({ a: [1, , 3], b: undefined }), JSON.stringify([1, 2], null, 1),
        "ab".repeat(40000).length, "x".padStart(100000, "ab").slice(0, 3),
        "aaab".indexOf("ab"), ("x".repeat(1e5) + "needle").indexOf("needle"),
        typeof Proxy.revocable(o, {}).revoke, [...new Set([1, 1, 2])].length,
        Array.prototype[Symbol.iterator] === Array.prototype.values, [..."ab"].length,
        Array.from(new Map([[1, 2]])).length, Array.from({ length: 3e5 }, (_, i) => i)[299999],
      ];
    }`,
  );
  assert.deepEqual(resultOf(run), [
    1,
    "a-b-c",
    false,
    true,
    5,
    300000,
    199998,
    "1,2,3",
    "0,2,4",
    3,
    "1,2,3",
    2,
    true,
    true,
    '{"a":[1,null,3]}',
    "[\n 1,\n 2\n]",
    80000,
    "aba",
    2,
    100000,
    "function",
    2,
    true,
    2,
    1,
    299999,
  ]);
});
