/**
 * The JavaScript evaluated in every VM before any task code: the `tools` proxy, `sleep`,
 * `checkpoint`, `console`, the task-start logic, and the table of parked host calls.
 *
 * The source is one function expression. The host calls it once during setup with the raw
 * bridge function, which therefore lives only in this closure: task code cannot reach it,
 * forge a call id, or settle a call. The function returns the "internals" object whose
 * methods only the host holds handles to. Everything here (call ids, resolvers, logs, the
 * run's state) lives on the QuickJS heap, so a snapshot of the memory carries it along.
 *
 * The built-ins the prelude uses are captured up front, so a task that rewrites
 * `JSON`, `Promise.prototype.then` or `Map.prototype` cannot confuse the bridge; arrays
 * grow through defineProperty, which setters on Array.prototype indices cannot intercept.
 */
import { C_LOOP_GUARDS_SOURCE } from "./c_loop_guards.ts";

export const PRELUDE_SOURCE = String.raw`
(function quickjsPrelude(hostCall) {
  "use strict";
  const G = globalThis;
  const apply = Reflect.apply;
  const defineProperty = Object.defineProperty;
  const freeze = Object.freeze;
  const isFrozen = Object.isFrozen;
  const getOwnPropertyNames = Object.getOwnPropertyNames;
  const isArray = Array.isArray;
  const jsonStringify = JSON.stringify;
  const jsonParse = JSON.parse;
  const PromiseCtor = Promise;
  const promiseThen = Promise.prototype.then;
  const promiseResolve = Promise.resolve;
  const MapCtor = Map;
  const mapGet = Map.prototype.get;
  const mapSet = Map.prototype.set;
  const mapDelete = Map.prototype.delete;
  const mapForEach = Map.prototype.forEach;
  const ErrorCtor = Error;
  const TypeErrorCtor = TypeError;
  const RangeErrorCtor = RangeError;
  const ProxyCtor = Proxy;
  const StringCtor = String;
  const DateCtor = Date;
  const dateNow = Date.now;
  const dateToISOString = Date.prototype.toISOString;
  const charCodeAt = String.prototype.charCodeAt;
  const stringSlice = String.prototype.slice;
  const arrayJoin = Array.prototype.join;
  const regExpTest = RegExp.prototype.test;
  const errorCodePattern = /^[A-Z][A-Z0-9_]*$/;
  const speciesSymbol = Symbol.species;

  let limits = {
    logBytes: 1 / 0, resultBytes: 1 / 0, pendingCalls: 1 / 0, argsBytes: 1 / 0, hostBytes: 1 / 0,
    sliceMs: 1 / 0, memoryBytes: 1 / 0,
  };
  // bytes of arguments and results that crossed the bridge since the host last configured
  // the VM (at its start, and at every restore: once per invocation)
  let hostBytes = 0;
  let state = "idle";
  let resultJson;
  let failure;
  let fatal;
  let nextId = 0;
  let pendingCount = 0;
  // ctx.invocation: the one field of the frozen ctx that changes, set by the host after a
  // restore (setInvocation) and read through a getter
  let invocation = 1;
  const pending = new MapCtor();
  const rejected = new MapCtor();
  let logs = [];
  let logBytes = 0;
  // values the host marked secret (kv secrets): console output shows them as [secret]
  const secrets = [];
  const stringSplit = String.prototype.split;
${C_LOOP_GUARDS_SOURCE}

  // arr.push and arr[i] = v both go through setters a task may put on Array.prototype
  const append = (array, value) =>
    defineProperty(array, array.length, { value, writable: true, enumerable: true, configurable: true });

  const utf8Length = (s) => {
    let n = 0;
    for (let i = 0; i < s.length; i++) {
      const c = apply(charCodeAt, s, [i]);
      n += c < 0x80 ? 1 : c < 0x800 ? 2 : c >= 0xd800 && c < 0xdc00 ? (i++, 4) : 3;
    }
    return n;
  };

  // at most max UTF-8 bytes? A UTF-16 unit is 1 to 3 UTF-8 bytes (a surrogate pair, 2
  // units, is 4), so the length alone decides, O(1), unless it lies within a factor 3 of max
  const utf8AtMost = (s, max) => s.length <= max && (s.length * 3 <= max || utf8Length(s) <= max);
  // an upper bound of a string's UTF-8 bytes, O(1)
  const utf8Bound = (s) => s.length * 3;

  const setFatal = (code, name, message) => {
    if (fatal === undefined) fatal = { code, name, message };
    const e = new ErrorCtor(message);
    e.name = name;
    e.code = code;
    return e;
  };

  // A host call's promise. It records whether anyone ever attached a handler (await,
  // then, catch, finally and Promise.all all go through then), so a rejection nobody
  // handles can fail the run, as an unhandled rejection ends a Node process. The mark is a
  // private field: a WeakSet would keep two allocations per call until QuickJS's cycle
  // collector runs, which in this build is almost never (measured: 2 blocks per call).
  class HostCallPromise extends PromiseCtor {
    #handled = false;
    static get [speciesSymbol]() {
      return PromiseCtor;
    }
    static wasHandled(promise) {
      return promise.#handled;
    }
    then(onFulfilled, onRejected) {
      this.#handled = true;
      return apply(promiseThen, this, [onFulfilled, onRejected]);
    }
  }
  freeze(HostCallPromise.prototype);
  freeze(HostCallPromise);

  function callHostTool(service, methodPath, args) {
    if (typeof service !== "string" || service === "") {
      throw new TypeErrorCtor("__callHostTool__: service must be a non-empty string");
    }
    if (!isArray(methodPath)) throw new TypeErrorCtor("__callHostTool__: methodPath must be an array");
    for (let i = 0; i < methodPath.length; i++) {
      if (typeof methodPath[i] !== "string") {
        throw new TypeErrorCtor("__callHostTool__: methodPath must hold strings");
      }
    }
    if (!isArray(args)) throw new TypeErrorCtor("__callHostTool__: args must be an array");
    const name = methodPath.length ? service + "." + apply(arrayJoin, methodPath, ["."]) : service;
    // a string argument longer than argsBytes is refused on its length, O(1), before
    // JSON.stringify copies it (a 16 MiB string took 0.6 s and ran out of memory there)
    for (let i = 0; i < args.length; i++) {
      const a = args[i];
      if (typeof a === "string" && a.length > limits.argsBytes) {
        return rejectedCall("ARGS_TOO_LARGE", "the arguments of tools." + name + " are larger than " + limits.argsBytes + " bytes as JSON");
      }
    }
    let argsJson;
    try {
      argsJson = jsonStringify(args);
    } catch (e) {
      throw new TypeErrorCtor("tools." + name + ": arguments must be JSON-serializable (" + describe(e).message + ")");
    }
    // checked here, on the JSON text, so an oversized argument never leaves the VM: the
    // host makes no copy of it, and the task's await rejects with a code it can catch
    // counted in UTF-16 units of the JSON, O(1): exact for ASCII, and never more than 3
    // bytes a unit. Counting UTF-8 bytes exactly walks the string in bytecode, ~5 us a
    // character here (a 400 KiB argument took 2 s, past the slice)
    if (argsJson.length > limits.argsBytes) {
      return rejectedCall("ARGS_TOO_LARGE", "the arguments of tools." + name + " are larger than " + limits.argsBytes + " bytes as JSON");
    }
    if (hostBytes + argsJson.length > limits.hostBytes) {
      return rejectedCall("HOST_BYTES_EXCEEDED", "tools." + name + " would pass more than " + limits.hostBytes +
        " bytes of arguments and results through the host in this invocation; await between large calls");
    }
    if (pendingCount >= limits.pendingCalls) {
      throw setFatal("TOO_MANY_PENDING_CALLS", "LimitError",
        "more than " + limits.pendingCalls + " host calls pending at once (calling tools." + name + ")");
    }
    hostBytes += argsJson.length;
    const id = ++nextId;
    let entry;
    const promise = new HostCallPromise((resolve, reject) => {
      entry = { resolve, reject, promise: undefined };
    });
    entry.promise = promise;
    apply(mapSet, pending, [id, entry]);
    pendingCount++;
    hostCall(id, service, jsonStringify(methodPath), argsJson);
    return promise;
  }

  // a call refused before it reached the host: a rejected promise, like any host error
  function rejectedCall(code, message) {
    const e = new RangeErrorCtor(message);
    e.name = "LimitError";
    e.code = code;
    return new PromiseCtor((_resolve, reject) => reject(e));
  }

  function toolProxy(service, path) {
    return new ProxyCtor(function tool() {}, {
      get(_target, key) {
        if (typeof key !== "string" || key === "then") return undefined;
        if (service === undefined) return toolProxy(key, []);
        const next = [];
        for (let i = 0; i < path.length; i++) append(next, path[i]);
        append(next, key);
        return toolProxy(service, next);
      },
      apply(_target, _this, args) {
        if (service === undefined) throw new TypeErrorCtor("call tools.<service>.<method>(...), not tools(...)");
        return callHostTool(service, path, args);
      },
      set() { return false; },
      defineProperty() { return false; },
      deleteProperty() { return false; },
    });
  }

  function describe(e, depth = 0) {
    try {
      if (typeof e === "object" && e !== null) {
        const out = {
          code: typeof e.code === "string" && apply(regExpTest, errorCodePattern, [e.code]) ? e.code : undefined,
          name: StringCtor(e.name === undefined ? "Error" : e.name),
          message: StringCtor(e.message === undefined ? "" : e.message),
          stack: typeof e.stack === "string" ? e.stack : undefined,
          cause: undefined,
        };
        if (depth < 8 && "cause" in e) out.cause = describe(e.cause, depth + 1);
        return out;
      }
      return { code: undefined, name: "Error", message: "a non-Error value was thrown: " + inspect(e), stack: undefined, cause: undefined };
    } catch (inner) {
      return { code: undefined, name: "Error", message: "an error that cannot be described was thrown", stack: undefined, cause: undefined };
    }
  }

  function inspect(v) {
    if (typeof v === "string") return v;
    if (v === undefined) return "undefined";
    if (typeof v === "function") return "[Function " + (v.name || "anonymous") + "]";
    if (typeof v === "bigint") return StringCtor(v) + "n";
    if (typeof v === "symbol") return StringCtor(v);
    if (v instanceof ErrorCtor) return (v.stack ? v.name + ": " + v.message + "\n" + v.stack : v.name + ": " + v.message);
    try {
      const s = jsonStringify(v);
      return s === undefined ? StringCtor(v) : s;
    } catch (_e) {
      try { return StringCtor(v); } catch (_e2) { return "[unprintable]"; }
    }
  }

  function rememberSecret(value, depth) {
    if (depth > 8 || secrets.length >= 1000) return;
    if (typeof value === "number") value = StringCtor(value);
    if (typeof value === "string") {
      if (value.length < 4) return;
      // as printed raw, and as printed inside JSON (quotes, backslashes, newlines escaped)
      const escaped = apply(stringSlice, jsonStringify(value), [1, -1]);
      for (const form of escaped === value ? [value] : [value, escaped]) {
        let known = false;
        for (let i = 0; i < secrets.length; i++) if (secrets[i] === form) known = true;
        if (!known) append(secrets, form);
      }
    } else if (typeof value === "object" && value !== null) {
      const names = getOwnPropertyNames(value);
      for (let i = 0; i < names.length; i++) rememberSecret(value[names[i]], depth + 1);
    }
  }

  function redact(message) {
    for (let i = 0; i < secrets.length; i++) {
      message = apply(arrayJoin, apply(stringSplit, message, [secrets[i]]), ["[secret]"]);
    }
    return message;
  }

  function log(level, args) {
    let message = "";
    for (let i = 0; i < args.length; i++) message += (i ? " " : "") + inspect(args[i]);
    if (fatal !== undefined && fatal.code === "LOG_TOO_LARGE") {
      throw setFatal("LOG_TOO_LARGE", "LimitError", "the task logged more than " + limits.logBytes + " bytes");
    }
    // O(1) per call in bytecode (a 20 MB message ran past the slice when every message was
    // walked): a message longer than what is left is refused on its length; one that fits
    // three times over is charged its length (its bytes when it is ASCII, a third of them at
    // worst); only within a factor 3 of the limit are its UTF-8 bytes counted exactly
    const left = limits.logBytes - logBytes - 32;
    if (message.length > left) {
      append(logs, { level: "error", at: dateNow(), message: "[log limit of " + limits.logBytes + " bytes reached]" });
      throw setFatal("LOG_TOO_LARGE", "LimitError", "the task logged more than " + limits.logBytes + " bytes");
    }
    message = redact(message);
    const bytes = (utf8Bound(message) <= left ? message.length : utf8Length(message)) + 32;
    if (logBytes + bytes > limits.logBytes) {
      append(logs, { level: "error", at: dateNow(), message: "[log limit of " + limits.logBytes + " bytes reached]" });
      throw setFatal("LOG_TOO_LARGE", "LimitError", "the task logged more than " + limits.logBytes + " bytes");
    }
    logBytes += bytes;
    append(logs, { level, at: dateNow(), message });
  }

  const consoleObject = {};
  for (const level of ["log", "info", "warn", "error", "debug"]) {
    consoleObject[level] = function () {
      const args = [];
      for (let i = 0; i < arguments.length; i++) append(args, arguments[i]);
      log(level, args);
    };
  }
  consoleObject.trace = consoleObject.debug;

  function deepFreeze(v) {
    if (typeof v === "object" && v !== null && !isFrozen(v)) {
      freeze(v);
      const names = getOwnPropertyNames(v);
      for (let i = 0; i < names.length; i++) deepFreeze(v[names[i]]);
    }
    return v;
  }

  function sleep(duration) {
    if (typeof duration !== "number" && typeof duration !== "string") {
      throw new TypeErrorCtor("sleep(duration): give milliseconds or a string such as \"90s\" or \"2 hours\"");
    }
    return callHostTool("sleep", [], [duration]);
  }

  function sleepUntil(when) {
    const date = new DateCtor(when instanceof DateCtor ? apply(DateCtor.prototype.getTime, when, []) : when);
    let iso;
    try {
      iso = apply(dateToISOString, date, []);
    } catch (_e) {
      throw new RangeErrorCtor("sleepUntil(date): not a valid date: " + inspect(when));
    }
    return callHostTool("sleep", ["until"], [iso]);
  }

  function checkpoint() {
    return callHostTool("checkpoint", [], []);
  }

  const constant = (name, value) =>
    defineProperty(G, name, { value, writable: false, enumerable: false, configurable: false });
  constant("__callHostTool__", freeze(function __callHostTool__(service, methodPath, args) {
    return callHostTool(service, methodPath, args);
  }));
  constant("tools", toolProxy(undefined, []));
  constant("sleep", freeze(sleep));
  constant("sleepUntil", freeze(sleepUntil));
  constant("checkpoint", freeze(checkpoint));
  constant("console", freeze(consoleObject));
  const commonJsModule = { exports: {} };
  defineProperty(G, "module", { value: commonJsModule, writable: true, enumerable: false, configurable: true });
  defineProperty(G, "exports", { value: commonJsModule.exports, writable: true, enumerable: false, configurable: true });

  function finish(value) {
    if (state !== "running") return;
    let json;
    try {
      json = value === undefined ? "null" : jsonStringify(value);
    } catch (e) {
      failure = { code: "RESULT_NOT_SERIALIZABLE", name: "TypeError", message: "the task's result is not JSON-serializable: " + describe(e).message };
      state = "failed";
      return;
    }
    if (json === undefined) {
      failure = { code: "RESULT_NOT_SERIALIZABLE", name: "TypeError", message: "the task's result is not JSON-serializable: it is a " + typeof value };
      state = "failed";
      return;
    }
    // the one check of resultBytes, here so an oversized result never leaves the VM. A
    // UTF-16 unit is 1 to 3 UTF-8 bytes (a surrogate pair, 2 units, is 4), so the length
    // alone decides (O(1)) unless it lies within a factor 3 of the limit
    if (!utf8AtMost(json, limits.resultBytes)) {
      failure = { code: "RESULT_TOO_LARGE", name: "LimitError", message: "the task's result is larger than " + limits.resultBytes + " bytes" };
      state = "failed";
      return;
    }
    resultJson = json;
    state = "done";
  }

  function fail(e) {
    if (state !== "running") return;
    failure = describe(e);
    state = "failed";
  }

  return freeze({
    configure(limitsJson) {
      limits = jsonParse(limitsJson);
      hostBytes = 0;
      sliceBegins();
    },
    start(kind, target, inputJson, contextJson) {
      if (state !== "idle") throw new ErrorCtor("the task was started already");
      sliceBegins();
      state = "running";
      const input = jsonParse(inputJson);
      const fields = jsonParse(contextJson);
      if (typeof fields.invocation === "number") invocation = fields.invocation;
      defineProperty(fields, "invocation", {
        get: freeze(function invocationOfRun() { return invocation; }),
        enumerable: true,
        configurable: false,
      });
      const context = deepFreeze(fields);
      const run = (loaded) => {
        let entry;
        if (kind === "module") {
          entry = loaded === undefined || loaded === null ? undefined : loaded.default;
          if (typeof entry !== "function" && G.module && typeof G.module.exports === "function") {
            entry = G.module.exports;
          }
        } else {
          const exported = G.module === undefined || G.module === null ? undefined : G.module.exports;
          entry = typeof exported === "function" ? exported : exported === undefined || exported === null ? undefined : exported.default;
        }
        if (typeof entry !== "function") {
          const e = new TypeErrorCtor(kind === "module"
            ? "the task module must export a default function: export default async function (input, ctx) { ... }"
            : "the task must set module.exports to a function: module.exports = async function (input) { ... }");
          e.code = "TASK_NO_ENTRY";
          throw e;
        }
        const result = entry(input, context);
        // the entry's own promise is followed with the captured then: a task that replaces
        // Promise.prototype.then cannot keep the run from finishing
        if (result instanceof PromiseCtor) apply(promiseThen, result, [finish, fail]);
        else apply(promiseThen, apply(promiseResolve, PromiseCtor, [result]), [finish, fail]);
      };
      apply(promiseThen, apply(promiseResolve, PromiseCtor, [target]), [(loaded) => {
        try {
          run(loaded);
        } catch (e) {
          fail(e);
        }
      }, fail]);
    },
    setInvocation(n) {
      invocation = n;
    },
    settle(id, ok, payloadJson, secret) {
      const entry = apply(mapGet, pending, [id]);
      if (entry === undefined) return false;
      sliceBegins();
      if (payloadJson !== undefined) hostBytes += payloadJson.length;
      apply(mapDelete, pending, [id]);
      pendingCount--;
      if (ok) {
        const value = payloadJson === undefined ? undefined : jsonParse(payloadJson);
        if (secret) rememberSecret(value, 0);
        entry.resolve(value);
      } else {
        const p = jsonParse(payloadJson);
        const e = new ErrorCtor(p.message);
        e.name = p.name;
        if (p.code !== undefined) e.code = p.code;
        if (p.data !== undefined) e.data = p.data;
        apply(mapSet, rejected, [id, entry.promise]);
        entry.reject(e);
      }
      return true;
    },
    status() {
      apply(mapForEach, rejected, [(promise, id) => {
        if (HostCallPromise.wasHandled(promise)) {
          apply(mapDelete, rejected, [id]);
        } else if (fatal === undefined && state === "running") {
          fatal = { code: "UNHANDLED_REJECTION", name: "UnhandledRejection", message: "host call " + id + " was rejected and the task never handled it" };
        }
      }]);
      const ids = [];
      apply(mapForEach, pending, [(_entry, id) => { append(ids, id); }]);
      const s = fatal !== undefined
        ? '{"state":"failed","error":' + jsonStringify(fatal)
        : '{"state":' + jsonStringify(state) + (state === "failed" ? ',"error":' + jsonStringify(failure) : state === "done" ? ',"result":' + resultJson : "");
      return s + ',"pending":' + jsonStringify(ids) + ',"lastCallId":' + nextId + "}";
    },
    // the host redacts these from everything it stores (it re-learns them after a restore)
    secrets() {
      return jsonStringify(secrets);
    },
    takeLogs() {
      if (logs.length === 0) return "[]";
      const out = jsonStringify(logs);
      logs = [];
      return out;
    },
  });
})
`;
