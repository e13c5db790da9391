/**
 * Guards, installed by the prelude, in front of the built-ins whose loops run inside
 * QuickJS's C code and so never reach the interrupt handler (it is polled only between
 * bytecode instructions). Each guard bounds the work before the C loop starts: it refuses
 * with a RangeError whose code is SANDBOX_TIMEOUT, or does the work in steps that return
 * to bytecode, where the deadline can stop it.
 *
 * Measured on this build (tests/sandbox/c_loop_test.ts, 200 ms slice, before the guards):
 * a generic array method walks a hole of an array-like at ~10,000 indices per ms
 * (`Array.prototype.indexOf.call({ length: 3e7 }, 1)` ran 2.7 s), and a naive string
 * search compares ~125,000 characters per ms (`"a".repeat(1e5).indexOf("a".repeat(5e4) +
 * "b")` ran 22 s). The bounds below allow a tenth of a slice of either, so a refused or
 * stepped call costs normal code nothing and an allowed one overshoots by at most ~10%.
 *
 * The source is spliced into the prelude's closure: it uses the prelude's captured
 * built-ins and its `limits` (sliceMs and memoryBytes arrive with `configure`).
 */
export const C_LOOP_GUARDS_SOURCE = String.raw`
  // ---- guards against C loops (c_loop_guards.ts) -------------------------------------
  const ArrayProto = Array.prototype;
  const StringProto = String.prototype;
  const mathFloor = Math.floor;
  const objectCreate = Object.create;
  const stringIndexOf = StringProto.indexOf;
  const stringLastIndexOf = StringProto.lastIndexOf;
  const stringStartsWith = StringProto.startsWith;
  // indices of an array-like hole a C loop walks per ms of slice (a tenth of the measured ~10,000)
  const INDICES_PER_MS = 1000;
  // characters a naive C string search compares per ms of slice (a tenth of ~125,000)
  const CHARS_PER_MS = 12500;
  // a JSValue is 8 bytes in this wasm32 build: no dense array under memoryBytes is longer
  const VALUE_BYTES = 8;

  const loopBound = () => limits.sliceMs * INDICES_PER_MS;
  const searchBound = () => limits.sliceMs * CHARS_PER_MS;
  // The stepped search returns to bytecode after each candidate, but QuickJS polls the
  // interrupt handler only every 10,000 calls and back-jumps, which many long candidates
  // can outlast (measured: 3.4 s past a 200 ms slice). So it counts the characters it
  // compared and stops at about a whole slice's worth, ten times the direct bound.
  const stepsBound = () => 10 * searchBound();

  const refuse = (what, work) => {
    const e = new RangeErrorCtor(what + " would loop over " + work + " elements inside the VM's C code, " +
      "where the " + limits.sliceMs + " ms deadline cannot stop it; use a real array or split the work");
    e.code = "SANDBOX_TIMEOUT";
    return e;
  };

  const toLength = (v) => {
    const n = +v;
    if (!(n > 0)) return 0;
    return n > 9007199254740991 ? 9007199254740991 : mathFloor(n);
  };

  // The length a generic method on o would loop to, or a refusal. A real, dense Array
  // (its last index present) may be as long as memory allows: QuickJS walks its values
  // in a tight loop. Anything else (an array-like, a sparse Array) is walked index by
  // index through property lookups, and must stay under loopBound.
  // A method that writes every index (fill) allocates as it goes, so on a real Array its
  // work is bounded by memory, holes or not: new Array(n).fill(x) stays cheap.
  const checkedLength = (o, what, writesEach) => {
    if (o === null || o === undefined) return 0; // the built-in throws its own TypeError
    const len = toLength(o.length);
    if (len <= loopBound()) return len;
    if (isArray(o) && len <= limits.memoryBytes / VALUE_BYTES && (writesEach || (len - 1) in o)) return len;
    throw refuse(what, len);
  };

  // what sort() does without a comparator, as a function: the comparisons then run
  // bytecode, so a long sort can be interrupted (the C default compares in a C loop)
  const defaultCompare = (a, b) => {
    const x = StringCtor(a);
    const y = StringCtor(b);
    return x < y ? -1 : x > y ? 1 : 0;
  };

  const guard = (proto, name, body) => {
    const original = proto[name];
    const wrapped = {
      [name](...args) {
        return body(this, original, args);
      },
    }[name];
    // writable and configurable as the built-in was: a task may replace the guard with its
    // own function (bytecode, which the deadline stops) but can never reach the original
    defineProperty(proto, name, { value: freeze(wrapped), writable: true, enumerable: false, configurable: true });
  };

  for (const name of [
    "indexOf", "lastIndexOf", "includes", "join", "toLocaleString", "fill", "copyWithin",
    "reverse", "every", "some", "forEach", "map", "filter", "reduce", "reduceRight", "find", "findIndex",
    "findLast", "findLastIndex", "splice", "slice", "shift", "unshift", "flat", "flatMap",
    "toReversed", "toSpliced", "toSorted", "with",
  ]) {
    if (typeof ArrayProto[name] !== "function") continue;
    guard(ArrayProto, name, (self, original, args) => {
      checkedLength(self, "Array.prototype." + name, name === "fill");
      if (name === "toSorted" && args.length === 0) return apply(original, self, [defaultCompare]);
      return apply(original, self, args);
    });
  }
  guard(ArrayProto, "sort", (self, original, args) => {
    const len = checkedLength(self, "Array.prototype.sort");
    if (args[0] === undefined && len > loopBound()) return apply(original, self, [defaultCompare]);
    return apply(original, self, args);
  });
  guard(ArrayProto, "concat", (self, original, args) => {
    // a spreadable array-like is copied index by index
    for (let i = 0; i < args.length; i++) {
      const a = args[i];
      if (typeof a === "object" && a !== null && !isArray(a) && a[Symbol.isConcatSpreadable]) {
        checkedLength(a, "Array.prototype.concat");
      }
    }
    return apply(original, self, args);
  });

  const ArrayCtor = Array;
  const arrayFrom = Array.from;
  const iteratorSymbol = Symbol.iterator;
  // Array.from(arrayLike) without a map function copies index by index in C; with one,
  // each index runs bytecode, and an iterable runs its iterator's next
  defineProperty(ArrayCtor, "from", {
    value: freeze({
      from(items, mapFn, thisArg) {
        if (mapFn === undefined && typeof items === "object" && items !== null && items[iteratorSymbol] == null) {
          const len = toLength(items.length);
          if (len > loopBound() && len > limits.memoryBytes / VALUE_BYTES) throw refuse("Array.from", len);
        }
        return apply(arrayFrom, this, arguments);
      },
    }.from),
    writable: true, enumerable: false, configurable: true,
  });

  // A naive search of a needle of m characters in a text of n compares up to (n - m + 1) * m
  // characters. Under searchBound it runs as it is. Over it, the first k characters of the
  // needle (k * n within the bound) are searched in C and each candidate checked with
  // startsWith: the same answer, in steps that each return to bytecode.
  const searchWork = (n, m) => (m === 0 || m > n ? 0 : (n - m + 1) * m);
  const safeIndexOf = (s, needle, from) => {
    const n = s.length;
    const m = needle.length;
    if (searchWork(n, m) <= searchBound()) return apply(stringIndexOf, s, [needle, from]);
    const k = mathFloor(searchBound() / n) || 1;
    const head = apply(stringSlice, needle, [0, k]);
    let work = 0;
    let i = from;
    for (;;) {
      i = apply(stringIndexOf, s, [head, i]);
      if (i < 0 || i > n - m) return -1;
      if (apply(stringStartsWith, s, [needle, i])) return i;
      work += m;
      if (work > stepsBound()) throw refuse("String.prototype.indexOf of a " + m + "-character string", work);
      i++;
    }
  };
  const safeLastIndexOf = (s, needle, from) => {
    const n = s.length;
    const m = needle.length;
    if (searchWork(n, m) <= searchBound()) return apply(stringLastIndexOf, s, [needle, from]);
    const k = mathFloor(searchBound() / n) || 1;
    const head = apply(stringSlice, needle, [0, k]);
    let work = 0;
    let i = from > n - m ? n - m : from;
    for (;;) {
      if (i < 0) return -1;
      i = apply(stringLastIndexOf, s, [head, i]);
      if (i < 0) return -1;
      if (apply(stringStartsWith, s, [needle, i])) return i;
      work += m;
      if (work > stepsBound()) throw refuse("String.prototype.lastIndexOf of a " + m + "-character string", work);
      i--;
    }
  };
  const toInteger = (v) => {
    const n = +v;
    return n !== n ? 0 : n === 1 / 0 || n === -1 / 0 ? n : n < 0 ? -mathFloor(-n) : mathFloor(n);
  };
  const clampIndex = (v, n) => {
    const i = toInteger(v);
    return i < 0 ? 0 : i > n ? n : i;
  };
  const thisString = (self, what) => {
    if (self === null || self === undefined) {
      throw new TypeErrorCtor("String.prototype." + what + " called on null or undefined");
    }
    return StringCtor(self);
  };
  guard(StringProto, "indexOf", (self, original, args) => {
    const s = thisString(self, "indexOf");
    const needle = StringCtor(args[0]);
    if (searchWork(s.length, needle.length) <= searchBound()) return apply(original, s, [needle, args[1]]);
    return safeIndexOf(s, needle, clampIndex(args[1], s.length));
  });
  guard(StringProto, "includes", (self, original, args) => {
    const s = thisString(self, "includes");
    const needle = args[0];
    // a RegExp argument makes the built-in throw, as it must
    if (typeof needle === "object" && needle !== null) return apply(original, s, args);
    const text = StringCtor(needle);
    if (searchWork(s.length, text.length) <= searchBound()) return apply(original, s, [text, args[1]]);
    return safeIndexOf(s, text, clampIndex(args[1], s.length)) !== -1;
  });
  guard(StringProto, "lastIndexOf", (self, original, args) => {
    const s = thisString(self, "lastIndexOf");
    const needle = StringCtor(args[0]);
    if (searchWork(s.length, needle.length) <= searchBound()) return apply(original, s, [needle, args[1]]);
    const pos = +args[1];
    return safeLastIndexOf(s, needle, pos !== pos ? s.length : clampIndex(pos, s.length));
  });
  // repeat and padStart/padEnd append the piece count times in C (measured: "ab".repeat(1e7)
  // took 600 ms, 33,000 characters per ms); doubling the piece builds the same string in
  // log2(count) concatenations, each a copy, and memory bounds how far it can go
  const REPEAT_DIRECT = 65536;
  const repeatString = (s, count) => {
    let result = "";
    let piece = s;
    let k = count;
    while (k > 0) {
      if (k % 2 === 1) result += piece;
      k = mathFloor(k / 2);
      if (k > 0) piece += piece;
    }
    return result;
  };
  guard(StringProto, "repeat", (self, original, args) => {
    const s = thisString(self, "repeat");
    const n = toInteger(args[0]);
    if (!(n >= 0) || n === 1 / 0 || s.length * n <= REPEAT_DIRECT) return apply(original, s, [n]);
    return repeatString(s, n);
  });
  for (const name of ["padStart", "padEnd"]) {
    guard(StringProto, name, (self, original, args) => {
      const s = thisString(self, name);
      const max = toLength(args[0]);
      if (max - s.length <= REPEAT_DIRECT) return apply(original, s, args);
      const fill = args[1] === undefined ? " " : StringCtor(args[1]);
      if (fill === "") return s;
      const need = max - s.length;
      const filler = apply(stringSlice, repeatString(fill, mathFloor(need / fill.length) + 1), [0, need]);
      return name === "padStart" ? filler + s : s + filler;
    });
  }

  // split, replace and replaceAll with a string pattern search the same naive way; over
  // the bound they are refused (their exact semantics are not worth re-implementing here)
  for (const name of ["split", "replace", "replaceAll"]) {
    guard(StringProto, name, (self, original, args) => {
      const pattern = args[0];
      if (typeof pattern === "string" && self !== null && self !== undefined) {
        const s = StringCtor(self);
        const work = searchWork(s.length, pattern.length);
        if (work > searchBound()) throw refuse("String.prototype." + name + " of a " + pattern.length + "-character string", work);
      }
      return apply(original, self, args);
    });
  }
`;
