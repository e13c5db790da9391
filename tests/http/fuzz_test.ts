/**
 * A seeded fuzzer against the real app over a real database: valid and broken requests on
 * every route and method, in-process and as raw bytes over TCP to a real Deno.serve. It
 * asserts what the attacker's fuzzer found broken: no 5xx, no hang, no internal error
 * logged, a broken request never answered 2xx, and no row changed that should not be (only
 * valid POST /runs create runs; runs and calls that existed before stay as they were).
 *
 * QUICKJS_FUZZ_REQUESTS sets the count (default 2,000; 20,000 with QUICKJS_RELIABILITY=1,
 * as `deno task test:reliability` runs it); QUICKJS_FUZZ_SEED replays a failure's seed.
 */
import assert from "node:assert/strict";
import { SignJWT } from "jose";
import { createApp } from "../../supabase/functions/quickjs/http/app.ts";
import { Engine, ToolRegistry } from "../../supabase/functions/_shared/quickjs/mod.ts";
import { dbTests, type TestDb } from "../support/db.ts";
import { captureErrors, internalErrors, rawRequest, type RawResult, serveApp } from "./raw_http.ts";

const { test } = dbTests("http fuzz");

const env = (name: string) => Deno.env.get(name) || undefined;
const REQUESTS = Number(
  env("QUICKJS_FUZZ_REQUESTS") ?? (env("QUICKJS_RELIABILITY") === "1" ? 20_000 : 2_000),
);
const SEED = Number(env("QUICKJS_FUZZ_SEED") ?? Math.floor(Math.random() * 2 ** 32));

/** Longest one request may take before it counts as a hang (a stall case waits 200 ms). */
const REQUEST_TIMEOUT_MS = 10_000;
const BODY_TIMEOUT_MS = 200;
const MAX_BODY = 64 * 1024;
const MAX_WAIT = 100;
const SERVICE_KEY = "fuzz-test-service-role-key";
const JWT_SECRET = "fuzz-test-jwt-secret-of-at-least-32-characters";
const USER_A = "00000000-0000-4000-8000-00000000000a";
const USER_B = "00000000-0000-4000-8000-00000000000b";

// ---- a seeded PRNG ---------------------------------------------------------------------------

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return {
    next,
    int,
    chance: (p: number) => next() < p,
    pick: <T>(items: readonly T[]): T => items[int(items.length)]!,
  };
}
type Rng = ReturnType<typeof prng>;

// ---- what a generated request is -------------------------------------------------------------

type Route = "start" | "get" | "cancel" | "resume" | "tick" | "complete" | "heartbeat" | "none";

interface Case {
  route: Route;
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string | Uint8Array;
  /** Why the request must be refused (4xx), or undefined when it may succeed. */
  broken?: string;
  /** Raw TCP: how the bytes go out, or undefined for an in-process Request. */
  transport?: Transport;
}

type Transport =
  | { kind: "plain" }
  | { kind: "chunked"; sizes: "valid" | "junk" | "lie" }
  | { kind: "truncate"; leave: true }
  | { kind: "stall" }
  | { kind: "pipelined" }
  | { kind: "garbage"; bytes: string };

interface World {
  tokens: Record<string, string>;
  taskId: string;
  /** Runs that existed before the fuzz and must not change. */
  protectedIds: string[];
  /** Runs the fuzz may cancel. */
  cancellableIds: string[];
  /** Runs the fuzz created (filled in as it goes). */
  createdIds: string[];
}

const VALID_TOKENS = ["service", "userA", "userB", "serviceJwt"] as const;
const BROKEN_TOKENS = [
  "none",
  "empty",
  "basic",
  "garbage",
  "expired",
  "wrongKey",
  "algNone",
  "noSub",
  "subNotUuid",
  "lowercase",
] as const;

const TEXT = [
  "a",
  "Ada",
  "é",
  "日本",
  "😀",
  " ",
  "\\n",
  "\\\\",
  '\\"',
  "\\u00e9",
  "\\t",
  "x".repeat(300),
];
const UNSTORABLE = ["\\u0000", "\\ud800", "\\udfff", "a\\u0000b", "\\ud83d"];

function jsonString(r: Rng, extra: readonly string[] = []): string {
  const parts = r.int(4);
  let s = "";
  for (let i = 0; i < parts; i++) s += r.pick([...TEXT, ...extra]);
  return `"${s}"`;
}

/** Random JSON text nested at most `depth` levels. */
function jsonValue(r: Rng, depth: number): string {
  const kind = r.int(depth > 0 ? 9 : 6);
  switch (kind) {
    case 0:
      return "null";
    case 1:
      return r.pick(["true", "false"]);
    case 2:
      return r.pick(["0", "-0", "1", "-17", "3.25", "1e308", "-1e-300", "9007199254740993", "1E2"]);
    case 3:
    case 4:
    case 5:
      return jsonString(r);
    case 6:
    case 7: {
      const n = r.int(4);
      return `[${Array.from({ length: n }, () => jsonValue(r, depth - 1)).join(",")}]`;
    }
    default: {
      const n = r.int(4);
      const keys = Array.from({ length: n }, () => `${jsonString(r)}:${jsonValue(r, depth - 1)}`);
      return `{${keys.join(",")}}`;
    }
  }
}

/** True when the JSON text holds a string or key with U+0000 or a lone surrogate. */
function holdsUnstorable(text: string): boolean {
  const bad = (x: string) => !x.isWellFormed() || x.includes("\0");
  const stack: unknown[] = [JSON.parse(text)];
  while (stack.length) {
    const item = stack.pop();
    if (typeof item === "string" && bad(item)) return true;
    if (item !== null && typeof item === "object") {
      if (!Array.isArray(item) && Object.keys(item).some(bad)) return true;
      stack.push(...Object.values(item));
    }
  }
  return false;
}

/** A top-level body object as text from [key, value text] entries. */
const object = (entries: [string, string][]) =>
  `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(",")}}`;

/** Mutations any JSON body can get that make it unacceptable on any route. */
function breakAnyBody(r: Rng, text: string): { body: string | Uint8Array; broken: string } {
  switch (r.int(11)) {
    case 0:
      return {
        body: text.slice(0, Math.max(1, r.int(text.length))) + "\u0001",
        broken: "not JSON",
      };
    case 1:
      return { body: `${text}}`, broken: "trailing garbage" };
    case 2: {
      const depth = r.pick([65, 66, 100, 1000, 10_000, 30_000]);
      return {
        body: r.chance(0.5)
          ? "[".repeat(depth) + "]".repeat(depth)
          : '{"a":'.repeat(depth) + "1" + "}".repeat(depth),
        broken: `nested ${depth} deep`,
      };
    }
    case 3:
      return { body: r.pick(["[]", "1", '"x"', "true", "null", "[{}]"]), broken: "not an object" };
    case 4:
      return { body: text.replace(/^\{/, '{"zzz":1,'), broken: "unknown key" };
    case 5:
      return { body: text.replace(/^\{/, '{"__proto__":{},'), broken: "__proto__ key" };
    case 6: {
      const bytes = new TextEncoder().encode(text);
      const bad = new Uint8Array([...bytes.slice(0, 1), 0xc3, 0x28, ...bytes.slice(1)]);
      return { body: bad, broken: "not UTF-8" };
    }
    case 7: {
      const utf16 = new Uint8Array([0xff, 0xfe, ...[...text].flatMap((c) => [c.charCodeAt(0), 0])]);
      return { body: utf16, broken: "UTF-16" };
    }
    case 8:
      return { body: "x".repeat(MAX_BODY + 1 + r.int(1000)), broken: "too large" };
    case 9:
      return { body: `{"a":1`, broken: "cut short" };
    default:
      return { body: "\ufeff\ufeff" + text, broken: "two byte order marks" };
  }
}

function startBody(r: Rng, world: World): { body: string | Uint8Array; broken?: string } {
  const entries: [string, string][] = [];
  let broken: string | undefined;
  const task = r.chance(0.85)
    ? ["task", JSON.stringify(r.pick(["fuzz_echo", "fuzz_echo", "fuzz_fail", "no_such_task"]))]
    : ["taskId", JSON.stringify(r.chance(0.7) ? world.taskId : crypto.randomUUID())];
  entries.push(task as [string, string]);
  if (r.chance(0.7)) entries.push(["input", jsonValue(r, 5)]);
  if (r.chance(0.5)) entries.push(["idempotencyKey", JSON.stringify(`key-${r.int(6)}`)]);
  if (r.chance(0.4)) entries.push(["wait", String(r.int(MAX_WAIT + 1))]);
  if (r.chance(0.1)) {
    // a duplicated key: JSON.parse keeps the last, which stays valid
    entries.unshift([task[0]!, '"overridden"']);
  }
  if (r.chance(0.35)) {
    const m = r.int(13);
    const set = (key: string, value: string, why: string) => {
      const i = entries.findIndex(([k]) => k === key);
      if (i >= 0) entries.splice(i, 1);
      entries.push([key, value]);
      broken = why;
    };
    switch (m) {
      case 0:
        for (let i = entries.length - 1; i >= 0; i--) {
          if (entries[i]![0] === task[0]) entries.splice(i, 1);
        }
        broken = "no task";
        break;
      case 1:
        entries.push(
          task[0] === "task" ? ["taskId", JSON.stringify(world.taskId)] : ["task", '"fuzz_echo"'],
        );
        broken = "task and taskId";
        break;
      case 2:
        set("task", r.pick(['""', `"${"t".repeat(201)}"`, "42", "null", "[]", "{}"]), "bad task");
        break;
      case 3:
        set("task", `"fuzz${r.pick(UNSTORABLE)}echo"`, "unstorable task");
        break;
      case 4:
        set(
          "taskId",
          r.pick(['"x"', '"00000000-0000-0000-0000-00000000000"', "1", '""']),
          "bad id",
        );
        break;
      case 5:
        set(
          "wait",
          r.pick(["-1", String(MAX_WAIT + 1), "25001", "1.5", '"10"', "null", "1e400", "true"]),
          "bad wait",
        );
        break;
      case 6:
        set(
          "idempotencyKey",
          r.pick(['""', `"${"k".repeat(201)}"`, "7", `"k${r.pick(UNSTORABLE)}"`]),
          "bad key",
        );
        break;
      case 7:
        set("input", `{"a":[${jsonString(r, UNSTORABLE)},${jsonString(r, UNSTORABLE)}]}`, "");
        // only broken when a string really holds one (\ud800 then \udfff make a pair)
        broken = holdsUnstorable(entries.at(-1)![1]) ? "unstorable input" : undefined;
        break;
      case 8:
        set("input", r.pick(["1e400", '{"x":-1e999}', "[1,2,1e500]"]), "infinite number");
        break;
      case 9:
        set("input", `{${r.pick(UNSTORABLE.map((u) => `"k${u}"`))}:1}`, "unstorable key");
        break;
      case 10:
        set("extra", "1", "unknown key");
        break;
      case 11: {
        // the body is one level, so an input of MAX_JSON_DEPTH - 1 (63) levels still fits
        const depth = r.pick([10, 63, 64, 100, 1000, 6000, 20_000]);
        const deep = r.chance(0.5)
          ? "[".repeat(depth) + "]".repeat(depth)
          : '{"a":'.repeat(depth) + "1" + "}".repeat(depth);
        set("input", deep, depth >= 64 ? `input nested ${depth} deep` : "");
        break;
      }
      default:
        return breakAnyBody(r, object(entries));
    }
  }
  return { body: object(entries), broken: broken || undefined };
}

function bodyFor(
  r: Rng,
  route: Route,
  world: World,
): { body?: string | Uint8Array; broken?: string } {
  if (route === "start") {
    if (r.chance(0.05)) return { body: r.pick(["", "  \n"]), broken: "empty start body" };
    return startBody(r, world);
  }
  if (route === "get" || route === "none") {
    return {};
  }
  let valid: string | undefined;
  switch (route) {
    case "cancel":
      valid = r.pick([undefined, "{}", `{"reason":${jsonString(r)}}`]);
      break;
    case "resume":
      valid = r.pick([undefined, "{}", " "]);
      break;
    case "tick":
      valid = r.pick([undefined, "{}", `{"limit":${1 + r.int(3)}}`]);
      break;
    // no call of the world was sent with a completion token: every one is refused
    case "complete":
      valid = r.pick([
        `{"token":${jsonString(r)},"result":${jsonString(r)}}`,
        `{"token":"${"t".repeat(43)}","error":{"code":"X","message":${jsonString(r)}}}`,
      ]);
      break;
    case "heartbeat":
      valid = r.pick([`{"token":${jsonString(r)}}`, `{"token":"t","details":{"p":${r.int(100)}}}`]);
      break;
  }
  if (!r.chance(0.4)) return { body: valid };
  if (route === "cancel" && r.chance(0.4)) {
    return {
      body: r.pick([
        '{"reason":1}',
        `{"reason":"${"r".repeat(1001)}"}`,
        `{"reason":"why${r.pick(UNSTORABLE)}"}`,
      ]),
      broken: "bad reason",
    };
  }
  if (route === "tick" && r.chance(0.4)) {
    return {
      body: `{"limit":${r.pick(["0", "51", "-1", "2.5", "1e400", '"5"', "null"])}}`,
      broken: "bad limit",
    };
  }
  return breakAnyBody(r, valid && valid.trim() ? valid : "{}");
}

const ROUTE_METHOD: Record<Exclude<Route, "none">, string> = {
  start: "POST",
  get: "GET",
  cancel: "POST",
  resume: "POST",
  tick: "POST",
  complete: "POST",
  heartbeat: "POST",
};

function idFor(r: Rng, world: World): { id: string; broken?: string; protectedRun?: boolean } {
  const k = r.int(10);
  if (k < 3 && world.createdIds.length) return { id: r.pick(world.createdIds) };
  if (k < 5) return { id: r.pick(world.protectedIds), protectedRun: true };
  if (k < 6) return { id: r.pick(world.cancellableIds) };
  if (k < 7) return { id: crypto.randomUUID() };
  if (k < 8) return { id: crypto.randomUUID().toUpperCase() };
  return {
    id: r.pick([
      "x",
      "1",
      "%00",
      "..%2Ftick",
      "%2e%2e%2f%2e%2e",
      `${crypto.randomUUID()}%00`,
      `{${crypto.randomUUID()}}`,
      "00000000-0000-0000-0000-00000000000g",
      "%F0%9F%98%80",
      "a".repeat(3000),
      "null",
      "undefined",
      "__proto__",
      "constructor",
      "%ZZ",
    ]),
    broken: "bad run id",
  };
}

const PREFIXES = ["/quickjs", "/quickjs", "/quickjs", "/functions/v1/quickjs"];
const ODD_METHODS = ["PUT", "DELETE", "PATCH", "HEAD", "FOO", "M-SEARCH", "PROPFIND", "toString"];
const CONTENT_TYPES = [
  "application/json",
  "application/json",
  "text/plain",
  "application/x-www-form-urlencoded",
  "multipart/form-data; boundary=x",
  "application/json; charset=utf-16",
  "",
];

function generate(r: Rng, world: World): Case {
  const route: Route = r.chance(0.05) ? "none" : r.pick<Route>([
    "start",
    "start",
    "start",
    "get",
    "get",
    "cancel",
    "cancel",
    "resume",
    "tick",
    "complete",
    "heartbeat",
  ]);
  let broken: string | undefined;
  let path: string;
  let protectedRun = false;
  const prefix = r.pick(PREFIXES);
  if (route === "none") {
    path = r.pick([
      "/",
      "/quickjs",
      "/quickjs/",
      "/quickjs/run",
      "/quickjs/runs/x/y/z",
      "/quickjs/tick/now",
      "/quickjsx/runs",
      "/quickjs/../etc/passwd",
      "/QUICKJS/runs",
      "/quickjs/runs/%2F",
      "/functions/v2/quickjs/tick",
      "//quickjs/runs",
    ]);
    broken = "no route";
  } else if (route === "start" || route === "tick") {
    path = `${prefix}/${route === "start" ? "runs" : "tick"}${r.chance(0.1) ? "/" : ""}`;
  } else {
    const id = idFor(r, world);
    broken = id.broken;
    protectedRun = id.protectedRun === true;
    const action = route === "complete" || route === "heartbeat"
      ? `/calls/${r.pick(["1", "1", "2", "0", "-1", "x", "99999999999", "1.5"])}/${route}`
      : route === "get"
      ? ""
      : `/${route}`;
    path = `${prefix}/runs/${id.id}${action}`;
    if (route === "complete" || route === "heartbeat") broken ??= "no call took this token";
  }
  if (r.chance(0.15)) {
    path += r.pick(["?x=1", "?wait=99999", "?a=%00", "#frag", "?" + "q".repeat(500)]);
  }

  let method = route === "none" ? r.pick(["GET", "POST"]) : ROUTE_METHOD[route];
  if (route !== "none" && r.chance(0.08)) {
    method = r.pick(ODD_METHODS);
    broken ??= `method ${method}`;
  } else if (r.chance(0.02)) {
    method = "OPTIONS"; // the preflight: 204 on any path, never a change
    broken = undefined;
  }

  let tokenName: string = r.chance(0.12) ? r.pick(BROKEN_TOKENS) : r.pick(VALID_TOKENS);
  // a valid cancel of a run that must not change goes out as a stranger (who gets 404)
  if (protectedRun && route === "cancel") tokenName = "userA";
  const headers: Record<string, string> = {};
  const token = world.tokens[tokenName];
  if (token !== undefined) headers.authorization = token;
  if ((BROKEN_TOKENS as readonly string[]).includes(tokenName)) broken ??= `token ${tokenName}`;
  const serviceOnly = ["resume", "tick", "complete", "heartbeat"].includes(route);
  if (serviceOnly && tokenName.startsWith("user")) {
    broken ??= "a user on a service route";
  }
  const contentType = r.pick(CONTENT_TYPES);
  if (contentType) headers["content-type"] = contentType;
  if (r.chance(0.05)) headers["x-junk"] = "j".repeat(r.pick([10, 1000, 8000]));
  if (r.chance(0.05)) headers.origin = "https://evil.example";

  const made = bodyFor(r, route, world);
  if (method !== "OPTIONS") broken ??= made.broken;
  const body = method === "GET" || method === "HEAD" ? undefined : made.body;
  if (method === "OPTIONS") broken = undefined;
  return { route, method, path, headers, body, broken };
}

/** One in ten goes out over TCP, most as plain bytes, some with a broken transport. */
function transportFor(r: Rng, c: Case): Case {
  if (!r.chance(0.1)) return c;
  const k = r.int(20);
  let transport: Transport;
  if (k < 8) transport = { kind: "plain" };
  else if (k < 11) transport = { kind: "chunked", sizes: "valid" };
  else if (k < 13) transport = { kind: "chunked", sizes: r.pick(["junk", "lie"] as const) };
  else if (k < 15) transport = { kind: "truncate", leave: true };
  else if (k < 16) transport = { kind: "stall" };
  else if (k < 17) transport = { kind: "pipelined" };
  else {
    transport = {
      kind: "garbage",
      bytes: r.pick([
        "\x00\x01\x02\r\n\r\n",
        "GET\r\n\r\n",
        `GET ${c.path} HTTP/1.1\r\n\r\n`, // no host
        `GET ${c.path} HTTP/2.0\r\nhost: x\r\n\r\n`,
        `get ${c.path} HTTP/1.1\r\nhost: x\r\n\r\n`,
        `CONNECT localhost:5432 HTTP/1.1\r\nhost: x\r\n\r\n`,
        `TRACE ${c.path} HTTP/1.1\r\nhost: x\r\n\r\n`,
        `GET ${c.path} HTTP/1.1\r\nhost: x\r\nx: ${"h".repeat(100_000)}\r\n\r\n`,
        `GET ${c.path} HTTP/1.1\r\nhost: x\r\n${"x-h: 1\r\n".repeat(300)}\r\n`,
        `POST ${c.path} HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n{}`,
        `POST ${c.path} HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n{}`,
        `POST ${c.path} HTTP/1.1\r\nhost: x\r\ncontent-length: 99999999999999999999\r\n\r\n{}`,
        `POST ${c.path} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 2\r\n\r\n0\r\n\r\n`,
        `GET http://other.example${c.path} HTTP/1.1\r\nhost: x\r\n\r\n`,
        `GET ${c.path} HTTP/1.1\r\nhost: x\r\nbad header line\r\n\r\n`,
        `GET ${c.path}\x00 HTTP/1.1\r\nhost: x\r\n\r\n`,
      ]),
    };
  }
  // a broken body only matters where the app reads one: POSTs to the routes with a body
  const readsBody = c.method === "POST" && c.route !== "get" && c.route !== "none";
  const bodyBroken = transport.kind === "stall" ||
    (transport.kind === "chunked" && transport.sizes !== "valid");
  // with no body bytes there are no chunk sizes to break, nothing to stall after
  if (bodyBroken && (!readsBody || bytesOf(c.body).byteLength === 0)) {
    transport = { kind: "plain" };
  }
  if (transport.kind !== "plain" && transport.kind !== "chunked") {
    return { ...c, transport, broken: c.broken ?? `transport ${transport.kind}` };
  }
  if (transport.kind === "chunked" && transport.sizes !== "valid") {
    return { ...c, transport, broken: c.broken ?? "bad chunks" };
  }
  return { ...c, transport };
}

// ---- sending ----------------------------------------------------------------------------------

interface Outcome {
  status: number | null;
  body: unknown;
}

const enc = new TextEncoder();
const bytesOf = (b: string | Uint8Array | undefined) =>
  b === undefined ? new Uint8Array() : typeof b === "string" ? enc.encode(b) : b;

async function sendInProcess(app: (r: Request) => Promise<Response>, c: Case): Promise<Outcome> {
  const response = await app(
    new Request(`http://localhost${c.path}`, {
      method: c.method,
      headers: c.headers,
      body: c.body === undefined ? undefined : bytesOf(c.body) as Uint8Array<ArrayBuffer>,
    }),
  );
  const text = await response.text();
  let body: unknown = text;
  try {
    body = text ? JSON.parse(text) : null;
  } catch { /* asserted below: errors must be JSON */ }
  return { status: response.status, body };
}

function headText(c: Case, extra: string): string {
  const lines = [`${c.method} ${c.path.replace(/#.*$/, "")} HTTP/1.1`, "host: localhost"];
  for (const [name, value] of Object.entries(c.headers)) lines.push(`${name}: ${value}`);
  return lines.join("\r\n") + "\r\n" + extra + "\r\n";
}

async function sendRaw(port: number, c: Case, r: Rng): Promise<Outcome> {
  const t = c.transport!;
  const body = bytesOf(c.body);
  // the answer to HEAD has a head only, whatever its Content-Length says
  const noBody = c.method === "HEAD";
  let result: RawResult;
  switch (t.kind) {
    case "plain":
      result = await rawRequest(
        port,
        [headText(c, `content-length: ${body.byteLength}\r\n`), body],
        { noBody },
      );
      break;
    case "chunked": {
      const parts: (string | Uint8Array)[] = [headText(c, "transfer-encoding: chunked\r\n")];
      let at = 0;
      while (at < body.byteLength) {
        const n = Math.min(body.byteLength - at, 1 + r.int(64));
        const size = t.sizes === "valid"
          ? n.toString(16)
          : t.sizes === "lie"
          ? (n + 1 + r.int(5)).toString(16)
          : r.pick(["zz", "-1", "fffffffffffffffffffff", " ", "0x10", "g"]);
        parts.push(`${size}\r\n`, body.subarray(at, at + n), "\r\n");
        at += n;
      }
      parts.push("0\r\n\r\n");
      result = await rawRequest(port, [concat(parts)], { noBody });
      break;
    }
    case "truncate":
      result = await rawRequest(port, [
        headText(c, `content-length: ${body.byteLength + 10}\r\n`),
        body.subarray(0, r.int(body.byteLength + 1)),
      ], { leave: true });
      break;
    case "stall":
      // promises more than it sends, then waits for the server's 408
      result = await rawRequest(port, [
        headText(c, `content-length: ${body.byteLength + 10}\r\n`),
        body,
      ], { timeoutMs: REQUEST_TIMEOUT_MS, noBody });
      break;
    case "pipelined": {
      const get = `GET /quickjs/runs/${crypto.randomUUID()} HTTP/1.1\r\nhost: x\r\n\r\n`;
      result = await rawRequest(port, [get + get]);
      break;
    }
    case "garbage":
      result = await rawRequest(port, [t.bytes]);
      break;
  }
  if (result.timedOut) throw new Error(`no response within the read timeout: ${result.text}`);
  const split = result.text.indexOf("\r\n\r\n");
  let parsed: unknown = null;
  try {
    parsed = split >= 0 ? JSON.parse(result.text.slice(split + 4)) : null;
  } catch { /* chunked or empty: not needed for raw cases */ }
  return { status: result.status, body: parsed };
}

function concat(parts: (string | Uint8Array)[]): Uint8Array {
  const chunks = parts.map(bytesOf);
  const all = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.byteLength;
  }
  return all;
}

function withTimeout<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    work,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`hang: no answer within ${ms} ms to ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// ---- the world before the fuzz ----------------------------------------------------------------

function jwt(
  claims: Record<string, unknown>,
  options: { sub?: string; exp?: string; key?: string },
) {
  let builder = new SignJWT(claims).setProtectedHeader({ alg: "HS256" }).setIssuedAt();
  if (options.sub) builder = builder.setSubject(options.sub);
  builder = builder.setExpirationTime(options.exp ?? "1h");
  return builder.sign(new TextEncoder().encode(options.key ?? JWT_SECRET));
}

async function tokens(): Promise<Record<string, string>> {
  const b64 = (o: unknown) => btoa(JSON.stringify(o)).replace(/=+$/, "");
  return {
    service: `Bearer ${SERVICE_KEY}`,
    serviceJwt: `Bearer ${await jwt({ role: "service_role" }, {})}`,
    userA: `Bearer ${await jwt({ role: "authenticated" }, { sub: USER_A })}`,
    userB: `Bearer ${await jwt({ role: "authenticated" }, { sub: USER_B })}`,
    empty: "Bearer ",
    basic: `Basic ${btoa("user:pass")}`,
    garbage: "Bearer a.b.c",
    expired: `Bearer ${await jwt({}, { sub: USER_A, exp: "-1h" })}`,
    wrongKey: `Bearer ${await jwt({ role: "service_role" }, { key: "x".repeat(40) })}`,
    algNone: `Bearer ${b64({ alg: "none" })}.${b64({ role: "service_role", exp: 9e9 })}.`,
    noSub: `Bearer ${await jwt({ role: "authenticated" }, {})}`,
    subNotUuid: `Bearer ${await jwt({}, { sub: "'; drop table quickjs.runs; --" })}`,
    lowercase: `bearer ${SERVICE_KEY}x`,
  };
}

interface Snapshot {
  runs: Map<string, string>;
  calls: Map<string, string>;
}

async function snapshot(db: TestDb): Promise<Snapshot> {
  const runs = await db.query<{ id: string; h: string }>(
    "select id::text, md5(r::text) as h from quickjs.runs r",
  );
  const calls = await db.query<{ k: string; h: string }>(
    "select run_id::text || ':' || seq as k, md5(c::text) as h from quickjs.calls c",
  );
  return {
    runs: new Map(runs.map((x) => [x.id, x.h])),
    calls: new Map(calls.map((x) => [x.k, x.h])),
  };
}

async function waitUntil(what: string, check: () => Promise<boolean>, ms: number) {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test(`${REQUESTS} fuzzed requests on every route: no 5xx, no hang, no internal error, no row changed that should not be`, async (db) => {
  console.log(
    `[fuzz] seed ${SEED}, ${REQUESTS} requests (replay: QUICKJS_FUZZ_SEED=${SEED} ` +
      `QUICKJS_FUZZ_REQUESTS=${REQUESTS})`,
  );
  const background: Promise<unknown>[] = [];
  const engine = new Engine({
    store: db.store,
    tools: new ToolRegistry(db.store),
    workerId: "fuzz",
  });
  const app = createApp({
    store: db.store,
    engine,
    auth: { serviceRoleKey: SERVICE_KEY, jwtSecret: JWT_SECRET },
    maxBodyBytes: MAX_BODY,
    maxWaitMs: MAX_WAIT,
    bodyTimeoutMs: BODY_TIMEOUT_MS,
    runInBackground: (work) => void background.push(work),
  });

  const echo = await db.store.publishTask({ name: "fuzz_echo", code: "export default (x) => x" });
  await db.store.publishTask({
    name: "fuzz_fail",
    code: "export default () => { throw new Error('on purpose') }",
  });
  await db.store.publishTask({
    name: "fuzz_nap",
    code: 'export default async () => { await sleep("2 hours"); return "rested" }',
  });
  const world: World = {
    tokens: await tokens(),
    taskId: echo.id,
    protectedIds: [],
    cancellableIds: [],
    createdIds: [],
  };
  // runs that exist before: finished and suspended ones, of user B and of the service role
  const setup = async (task: string, token: string, input: unknown) => {
    const res = await sendInProcess(app, {
      route: "start",
      method: "POST",
      path: "/quickjs/runs",
      headers: { authorization: world.tokens[token]! },
      body: JSON.stringify({ task, input }),
    });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    return (res.body as { run: { id: string } }).run.id;
  };
  for (const token of ["userB", "service"]) {
    world.protectedIds.push(await setup("fuzz_echo", token, { n: 1 }));
    world.protectedIds.push(await setup("fuzz_nap", token, null));
    world.cancellableIds.push(await setup("fuzz_nap", token === "userB" ? "userA" : token, null));
  }
  await Promise.all(background.splice(0));
  await waitUntil("the setup runs to settle", async () => {
    const rows = await db.query<{ n: number }>(
      "select count(*)::int as n from quickjs.runs where status in ('queued', 'running')",
    );
    return rows[0]!.n === 0;
  }, 20_000);
  const before = await snapshot(db);

  const served = serveApp(app);
  const errors = captureErrors();
  const r = prng(SEED);
  const byStatus = new Map<string, number>();
  const failures: string[] = [];
  try {
    for (let i = 0; i < REQUESTS && failures.length < 5; i++) {
      const c = transportFor(r, generate(r, world));
      const what = `#${i} ${c.transport ? `TCP ${c.transport.kind} ` : ""}${c.method} ` +
        `${c.path.slice(0, 120)} (${c.broken ?? "valid"})`;
      let outcome: Outcome;
      try {
        outcome = await withTimeout(
          c.transport ? sendRaw(served.port, c, r) : sendInProcess(app, c),
          REQUEST_TIMEOUT_MS,
          what,
        );
      } catch (e) {
        failures.push(`${what}: ${(e as Error).message}`);
        continue;
      }
      const { status, body } = outcome;
      const key = status === null ? "no response" : String(status);
      byStatus.set(key, (byStatus.get(key) ?? 0) + 1);
      const problem = check(c, outcome);
      if (problem) failures.push(`${what}: ${problem}: ${JSON.stringify(body)?.slice(0, 300)}`);
      const created = body as { created?: boolean; run?: { id?: string } } | null;
      if (status !== null && status < 300 && created?.created === true && created.run?.id) {
        world.createdIds.push(created.run.id);
      }
      if (background.length > 50) await Promise.allSettled(background.splice(0));
    }
    await withTimeout(Promise.allSettled(background), 60_000, "the background executions");
    await waitUntil("the fuzz's runs to settle", async () => {
      const rows = await db.query<{ n: number }>(
        "select count(*)::int as n from quickjs.runs where status in ('queued', 'running')",
      );
      return rows[0]!.n === 0;
    }, 60_000).catch((e) => failures.push(e.message));
  } finally {
    errors.restore();
    await served.close();
  }
  console.log(
    `[fuzz] by status: ${
      [...byStatus].sort().map(([s, n]) => `${s}: ${n}`).join(", ")
    }; runs created: ${world.createdIds.length}`,
  );

  const after = await snapshot(db);
  const allowed = new Set([...world.createdIds, ...world.cancellableIds]);
  for (const [id, hash] of before.runs) {
    if (!allowed.has(id) && after.runs.get(id) !== hash) failures.push(`run ${id} changed`);
  }
  for (const id of after.runs.keys()) {
    if (!before.runs.has(id) && !world.createdIds.includes(id)) {
      failures.push(`run ${id} appeared without a valid POST /runs answering created: true`);
    }
  }
  assert.equal(after.runs.size, before.runs.size + world.createdIds.length, `seed ${SEED}`);
  for (const [k, hash] of before.calls) {
    if (!allowed.has(k.split(":")[0]!) && after.calls.get(k) !== hash) {
      failures.push(`call ${k} changed`);
    }
  }
  for (const k of after.calls.keys()) {
    if (!before.calls.has(k) && !world.createdIds.includes(k.split(":")[0]!)) {
      failures.push(`call ${k} appeared on a run the fuzz did not create`);
    }
  }
  failures.push(...internalErrors(errors.logged).map((line) => `logged: ${line.slice(0, 300)}`));
  failures.push(...served.escaped.map((e) => `escaped to Deno.serve: ${e}`));
  assert.deepEqual(
    failures,
    [],
    `seed ${SEED} (replay: QUICKJS_FUZZ_SEED=${SEED} QUICKJS_FUZZ_REQUESTS=${REQUESTS})`,
  );
});

/** What is wrong with the answer to `c`, or undefined. */
function check(c: Case, { status, body }: Outcome): string | undefined {
  if (status === null) {
    // only a client that left, or bytes that are not HTTP, may go unanswered
    const t = c.transport?.kind;
    return t === "truncate" || t === "garbage" || t === "chunked" ? undefined : "no response";
  }
  if (status >= 500) return `answered ${status}`;
  if (c.broken && status < 400) return `a broken request (${c.broken}) answered ${status}`;
  if (status >= 400 && !c.transport) {
    const error = (body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
    if (typeof error?.code !== "string" || !/^[A-Z][A-Z0-9_]*$/.test(error.code)) {
      return "an error without a stable code";
    }
    if (typeof error.message !== "string") return "an error without a message";
  }
  return undefined;
}
