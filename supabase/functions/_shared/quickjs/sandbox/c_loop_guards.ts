/**
 * Guards, installed by the prelude, in front of the built-ins whose loops run inside
 * QuickJS's C code and so never reach the interrupt handler (it is polled only between
 * bytecode instructions). Each guard bounds the work before the C loop starts: it refuses
 * with a RangeError whose code is SANDBOX_TIMEOUT, or does the work in steps that return
 * to bytecode, where the deadline can stop it.
 *
 * Measured on this build (tests/sandbox/c_loop_measure.ts, 200 ms slice, before the guards):
 * a generic array method walks a hole of an array-like at ~10,000 indices per ms
 * (`Array.prototype.indexOf.call({ length: 3e7 }, 1)` ran 2.7 s), and a naive string
 * search compares ~125,000 characters per ms (`"a".repeat(1e5).indexOf("a".repeat(5e4) +
 * "b")` ran 22 s). The bounds below allow a tenth of a slice of either, so a refused or
 * stepped call costs normal code nothing and an allowed one overshoots by at most ~10%.
 *
 * The source is spliced into the prelude's closure: it uses the prelude's captured
 * built-ins and its `limits` (sliceMs and memoryBytes arrive with `configure`).
 *
 * What the guards do not stop (measure with tests/sandbox/c_loop_measure.ts):
 * - One costly instruction per back-jump. QuickJS polls its interrupt handler every 10,000
 *   back-jumps and calls (a compile-time constant of the wasm build), so a loop whose body
 *   is one multi-megabyte string comparison or concatenation runs 10,000 of them between
 *   polls (`s === t` on 4e6-character strings in a loop ran past 12 s). Only preemption
 *   from outside (a Worker the host terminates) bounds that.
 * - A dense Array in dictionary mode (filled out of order) passes the density probes and
 *   is walked by lookup; memory bounds it (1e6 elements: ~20 ms past a 200 ms slice), and
 *   the probes are random, so a sparse Array passes them only with density**24.
 * - JSON.stringify with an array replacer is not stepped; a typed array's default sort
 *   is a C sort of at most memoryBytes elements.
 * - On an array-like whose length is an accessor (or a proxy), the built-in runs on a
 *   pinned view: a callback's third argument is that view, not the object.
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

  // ---- the slice clock. Allowed C loops are each under a tenth of a slice, but QuickJS
  // polls its interrupt handler only every 10,000 calls and back-jumps, so a loop of
  // allowed calls could run for thousands of slices before the deadline is seen. Every
  // guard that lets real work through reads the clock first: past twice the slice since
  // the host last entered through start or settle (twice, because a run() can follow a
  // start without a settle between), the run fails SANDBOX_TIMEOUT, uncatchably.
  // (set at start and settle: the boot image must not depend on the clock)
  let sliceStart = 1 / 0;
  const sliceBegins = () => {
    sliceStart = dateNow();
    seed = (seed ^ sliceStart) | 1;
  };
  const sliceCheck = () => {
    if (dateNow() - sliceStart > 2 * limits.sliceMs) {
      throw setFatal("SANDBOX_TIMEOUT", "SandboxTimeout", "the task ran for more than " + limits.sliceMs +
        " ms without awaiting (in built-ins called in a loop); split long synchronous work with \`await checkpoint()\`");
    }
  };

  // ---- proxies. A Proxy (or a length getter) can answer the guard's read of length
  // with 0 and the built-in's with 2**53-1, so the guard must know which objects are
  // proxies: the prelude replaces Proxy and Proxy.revocable and records what they make.
  const weakSetHas = WeakSet.prototype.has;
  const weakSetAdd = WeakSet.prototype.add;
  const proxies = new WeakSet();
  const reflectConstruct = Reflect.construct;
  const reflectGet = Reflect.get;
  const getPrototypeOf = Object.getPrototypeOf;
  const getOwnPropertyDescriptor = Object.getOwnPropertyDescriptor;
  const proxyRevocable = Proxy.revocable;
  const isProxy = (o) => (typeof o === "object" || typeof o === "function") && o !== null && apply(weakSetHas, proxies, [o]);
  const TaskProxy = function Proxy(target, handler) {
    if (new.target === undefined) throw new TypeErrorCtor("Constructor Proxy requires 'new'");
    const p = new ProxyCtor(target, handler);
    apply(weakSetAdd, proxies, [p]);
    return p;
  };
  defineProperty(TaskProxy, "revocable", {
    value: freeze({
      revocable(target, handler) {
        const r = apply(proxyRevocable, ProxyCtor, [target, handler]);
        apply(weakSetAdd, proxies, [r.proxy]);
        return r;
      },
    }.revocable),
    writable: true, enumerable: false, configurable: true,
  });
  defineProperty(G, "Proxy", { value: freeze(TaskProxy), writable: true, enumerable: false, configurable: true });

  // may o's length read differently next time? (a proxy, or a length accessor anywhere on
  // its prototype chain; a real Array's length is a data property that cannot be redefined)
  // The same question for any key the guard reads before the built-in does (length,
  // Symbol.iterator, Symbol.isConcatSpreadable).
  const mayChange = (o, key) => {
    if (typeof o !== "object" && typeof o !== "function") return false;
    for (let p = o, depth = 0; p !== null; p = getPrototypeOf(p), depth++) {
      if (isProxy(p) || depth > 64) return true;
      if (depth === 0 && key === "length" && isArray(p)) return false;
      const d = getOwnPropertyDescriptor(p, key);
      if (d !== undefined) return !("value" in d);
    }
    return false;
  };
  const lengthMayChange = (o) => mayChange(o, "length");
  // a view of o whose length is fixed at what the guard read: every other property, and
  // every write, goes to o itself
  // (arrayLike: read as an array-like, so Symbol.iterator reads as undefined too)
  const pinned = (o, len, arrayLike) =>
    new ProxyCtor(o, {
      get: (t, k, r) => (k === "length" ? len : arrayLike && k === Symbol.iterator ? undefined : reflectGet(t, k, r)),
    });

  // a small PRNG for the density probes: the task cannot predict which indices are probed
  let seed = 0x2545f491;
  const random = (n) => {
    seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  const PROBES = 24;
  // is a real Array of length len (its last index present) dense? QuickJS walks a dense
  // Array's values in a tight loop, but a sparse one index by index through lookups
  // (measured 2,000 indices per ms: [], a[12e6 - 1] = 1, a.indexOf(2) ran 6 s). Random
  // probes: a sparse Array passes all of them with probability density**PROBES.
  const looksDense = (o, len) => {
    if (!((len - 1) in o) || !(0 in o)) return false;
    for (let i = 0; i < PROBES; i++) if (!(random(len) in o)) return false;
    return true;
  };

  // The length a generic method on o would loop to, or a refusal. A real, dense Array
  // (its last index present) may be as long as memory allows: QuickJS walks its values
  // in a tight loop. Anything else (an array-like, a sparse Array) is walked index by
  // index through property lookups, and must stay under loopBound.
  // A method that writes every index (fill) allocates as it goes, so on a real Array its
  // work is bounded by memory, holes or not: new Array(n).fill(x) stays cheap.
  // Returns the object the built-in should run on: o, or a pinned view of it when its
  // length could read differently the second time.
  const checkedThis = (o, what, arrayLike) => {
    // the common case first, in as few calls as possible: a real Array under the bound
    if (isArray(o) && o.length <= limits.sliceMs * INDICES_PER_MS && !apply(weakSetHas, proxies, [o])) return o;
    if (o === null || o === undefined) return o; // the built-in throws its own TypeError
    const len = toLength(o.length);
    const view = lengthMayChange(o) || (arrayLike && mayChange(o, Symbol.iterator)) ? pinned(o, len, arrayLike) : o;
    if (len > 4096) sliceCheck();
    if (len <= loopBound()) return view;
    if (view === o && isArray(o) && len <= limits.memoryBytes / VALUE_BYTES && looksDense(o, len)) return o;
    throw refuse(what, len);
  };
  // the built-in's result, with a pinned view replaced by the object it stands for
  const unpin = (result, view, o) => (result === view && view !== o ? o : result);

  // Searching a long string in an Array compares it with each element in C: a 1e5-element
  // Array of one 1e5-character string ran past any slice. Bounded like a string search.
  const LONG_NEEDLE = 256;

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
    const original = ArrayProto[name];
    if (typeof original !== "function" || name === "fill") continue;
    const searches = name === "indexOf" || name === "lastIndexOf" || name === "includes";
    const what = "Array.prototype." + name;
    const slow = (self, args) => {
      const view = checkedThis(self, what);
      if (searches && typeof args[0] === "string" && args[0].length > LONG_NEEDLE) {
        const work = toLength(view.length) * args[0].length;
        if (work > searchBound()) throw refuse(what + " of a " + args[0].length + "-character string", work);
      }
      if (name === "toSorted" && args.length === 0 && toLength(view.length) > loopBound()) {
        return apply(original, view, [defaultCompare]);
      }
      return unpin(apply(original, view, args), view, self);
    };
    const wrapped = {
      [name](...args) {
        // inline, the common case: a real Array under the bound (a guarded call costs one
        // bytecode call more than the built-in, ~3 us on this build)
        if (
          isArray(this) && this.length <= limits.sliceMs * INDICES_PER_MS && !apply(weakSetHas, proxies, [this]) &&
          !(searches && typeof args[0] === "string" && args[0].length > LONG_NEEDLE)
        ) return apply(original, this, args);
        return slow(this, args);
      },
    }[name];
    defineProperty(ArrayProto, name, { value: freeze(wrapped), writable: true, enumerable: false, configurable: true });
  }
  // An Array iterator's next() is native, and what consumes an iterator natively (new Set,
  // Array.from, spread) calls it in a C loop: new Set(new Array(2 ** 32 - 1).values())
  // walks 4e9 holes storing nothing. The iterator is refused where the Array methods are.
  {
    const original = ArrayProto.values;
    const values = freeze({
      values() {
        if (isArray(this) && this.length <= limits.sliceMs * INDICES_PER_MS && !apply(weakSetHas, proxies, [this])) {
          return apply(original, this, []);
        }
        return apply(original, checkedThis(this, "Array.prototype.values"), []);
      },
    }.values);
    defineProperty(ArrayProto, "values", { value: values, writable: true, enumerable: false, configurable: true });
    defineProperty(ArrayProto, Symbol.iterator, { value: values, writable: true, enumerable: false, configurable: true });
    for (const name of ["keys", "entries"]) {
      guard(ArrayProto, name, (self, original, args) => apply(original, checkedThis(self, "Array.prototype." + name), args));
    }
  }

  // fill writes every index, allocating as it goes (new Array(12e6).fill(0) ran 3.5 s in C
  // before memory ran out): over the bound it fills in chunks, reading the clock between
  const arrayFill = ArrayProto.fill;
  guard(ArrayProto, "fill", (self, original, args) => {
    if (self === null || self === undefined) return apply(original, self, args);
    const len = toLength(self.length);
    if (len > 4096) sliceCheck();
    const view = lengthMayChange(self) ? pinned(self, len) : self;
    const rel = (v, d) => {
      const i = v === undefined ? d : toInteger(v);
      return i < 0 ? (len + i < 0 ? 0 : len + i) : i > len ? len : i;
    };
    const start = rel(args[1], 0);
    const end = rel(args[2], len);
    if (end - start <= loopBound()) return unpin(apply(original, view, args), view, self);
    for (let s = start; s < end; s += loopBound()) {
      sliceCheck();
      apply(arrayFill, view, [args[0], s, s + loopBound() < end ? s + loopBound() : end]);
    }
    return self;
  });
  guard(ArrayProto, "sort", (self, original, args) => {
    const view = checkedThis(self, "Array.prototype.sort");
    if (args[0] === undefined && toLength(view.length) > loopBound()) return unpin(apply(original, view, [defaultCompare]), view, self);
    return unpin(apply(original, view, args), view, self);
  });
  // might concat spread a? (a flag behind a getter or a proxy may answer differently to the
  // built-in, so such an object counts as spread and its length is bounded)
  const spreadSymbol = Symbol.isConcatSpreadable;
  const spreadable = (a) => {
    if (typeof a !== "object" || a === null) return false;
    if (mayChange(a, spreadSymbol)) return true;
    const flag = a[spreadSymbol];
    return flag === undefined ? isArray(a) : !!flag;
  };
  guard(ArrayProto, "concat", (self, original, args) => {
    // a spreadable array-like is copied index by index
    const list = [];
    for (let i = 0; i < args.length; i++) {
      const a = args[i];
      defineProperty(list, i, {
        value: spreadable(a) ? checkedThis(a, "Array.prototype.concat") : a,
        writable: true, enumerable: true, configurable: true,
      });
    }
    return apply(original, spreadable(self) ? checkedThis(self, "Array.prototype.concat") : self, list);
  });

  const ArrayCtor = Array;
  const arrayFrom = Array.from;
  const iteratorSymbol = Symbol.iterator;
  // Array.from(arrayLike) without a map function copies index by index in C; with one,
  // each index runs bytecode, and an iterable runs its iterator's next
  defineProperty(ArrayCtor, "from", {
    value: freeze({
      from(items, mapFn, thisArg) {
        if (typeof items === "object" && items !== null && (items[iteratorSymbol] == null || mayChange(items, iteratorSymbol))) {
          // index by index in C (Array.from({ length: 12e6 }) ran past 12 s), with or without
          // a map function: allowed up to the bound, on a pinned view
          const len = toLength(items.length);
          if (len > 4096) sliceCheck();
          // with a map function each index runs bytecode, which the deadline stops
          // (Array.from({ length: 1e6 }, (_, i) => i) is an idiom)
          if (len > loopBound() && typeof mapFn !== "function") throw refuse("Array.from", len);
          const view = lengthMayChange(items) || mayChange(items, iteratorSymbol) ? pinned(items, len, true) : items;
          return apply(arrayFrom, this, [view, mapFn, thisArg]);
        }
        return apply(arrayFrom, this, arguments);
      },
    }.from),
    writable: true, enumerable: false, configurable: true,
  });

  // Typed arrays: their constructors, from and set copy an array-like (or walk a sparse
  // Array's iterator) index by index in C (new Uint8Array({ length: 3e7 }) never ended).
  // A typed array or ArrayBuffer source is copied with memcpy; a custom iterable's next()
  // is bytecode; anything else goes through the Array guard's bounds.
  const TypedArrayCtor = getPrototypeOf(Uint8Array);
  const TypedArrayProto = TypedArrayCtor.prototype;
  const typedLength = getOwnPropertyDescriptor(TypedArrayProto, "length").get;
  const bufferLength = getOwnPropertyDescriptor(ArrayBuffer.prototype, "byteLength").get;
  const isKind = (getter, o) => {
    try {
      apply(getter, o, []);
      return true;
    } catch {
      return false;
    }
  };
  const checkedSource = (src, what) => {
    if (typeof src !== "object" || src === null) return src;
    if (!isProxy(src) && (isKind(typedLength, src) || isKind(bufferLength, src))) return src;
    if (src[iteratorSymbol] != null && !isArray(src) && !mayChange(src, iteratorSymbol)) return src;
    return checkedThis(src, what, !isArray(src));
  };
  for (const name of getOwnPropertyNames(G)) {
    const C = G[name];
    if (typeof C !== "function" || getPrototypeOf(C) !== TypedArrayCtor) continue;
    const wrapped = new ProxyCtor(C, {
      construct(target, args, newTarget) {
        if (args.length > 0) {
          defineProperty(args, 0, { value: checkedSource(args[0], name), writable: true, enumerable: true, configurable: true });
        }
        return reflectConstruct(target, args, newTarget);
      },
    });
    defineProperty(G, name, { value: wrapped, writable: true, enumerable: false, configurable: true });
    defineProperty(C.prototype, "constructor", { value: wrapped, writable: true, enumerable: false, configurable: true });
  }
  const typedFrom = TypedArrayCtor.from;
  defineProperty(TypedArrayCtor, "from", {
    value: freeze({
      from(source, mapFn, thisArg) {
        return apply(typedFrom, this, [checkedSource(source, "TypedArray.from"), mapFn, thisArg]);
      },
    }.from),
    writable: true, enumerable: false, configurable: true,
  });
  guard(TypedArrayProto, "set", (self, original, args) =>
    apply(original, self, [checkedSource(args[0], "TypedArray.prototype.set"), args[1]]));
  // join makes a string of every element in C (new Uint8Array(3e7).join() ran 0.7 s
  // before memory ran out); ~20,000 elements per ms, so four times the Array bound
  for (const name of ["join", "toLocaleString"]) {
    guard(TypedArrayProto, name, (self, original, args) => {
      const len = isKind(typedLength, self) ? apply(typedLength, self, []) : 0;
      if (len > 4096) sliceCheck();
      if (len > 4 * loopBound()) throw refuse("TypedArray.prototype." + name, len);
      return apply(original, self, args);
    });
  }

  // JSON.stringify walks an Array's indices in C, holes included
  // (JSON.stringify({ a: [new Array(1e8)] }) never ended): without a replacer function of
  // the task's own, every value passes through one that reads the clock now and then
  const JSONObject = JSON;
  let jsonCount = 0;
  const jsonPass = function (_key, value) {
    if ((++jsonCount & 1023) === 0) sliceCheck();
    return value;
  };
  defineProperty(JSONObject, "stringify", {
    value: freeze({
      stringify(value, replacer, space) {
        return apply(jsonStringify, JSONObject, [value, typeof replacer === "function" || isArray(replacer) ? replacer : jsonPass, space]);
      },
    }.stringify),
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
