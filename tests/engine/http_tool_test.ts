/**
 * tools.http.fetch: only hosts on the allowlist, never private, loopback, link-local
 * (cloud metadata) or CGNAT addresses, whether named directly, reached through DNS or
 * through a redirect; responses capped in size and time. Called directly, and from a task.
 */
import assert from "node:assert/strict";
import { dbTests } from "../support/db.ts";
import { harness, runTaskToEnd } from "../support/engine_harness.ts";
import { json, pause, serve } from "../support/engine_scenarios.ts";
import {
  type HttpToolOptions,
  type Json,
  ToolError,
} from "../../supabase/functions/_shared/quickjs/mod.ts";
import {
  hostAllowed,
  httpFetch,
  isPrivateAddress,
} from "../../supabase/functions/_shared/quickjs/engine/http_tool.ts";

const PUBLIC_IP = "93.184.216.34";

/** A stand-in for the network: answers `respond(url, init)` and records every request. */
function fakeNet(respond: (url: URL, init: RequestInit) => Response = () => new Response("hi")) {
  const requests: { url: string; method: string; body: string | undefined }[] = [];
  const fetch = ((input: URL | string, init: RequestInit = {}) => {
    const url = new URL(String(input));
    requests.push({ url: url.toString(), method: init.method ?? "GET", body: init.body as string });
    return Promise.resolve(respond(url, init));
  }) as typeof globalThis.fetch;
  return { fetch, requests };
}

/** Options with a fake resolver (every name is public unless listed) and a fake network. */
function options(
  extra: Partial<HttpToolOptions> & { names?: Record<string, string[]> } = {},
): HttpToolOptions {
  const { names = {}, ...rest } = extra;
  return {
    allow: ["*"],
    resolve: (host) => Promise.resolve(names[host] ?? [PUBLIC_IP]),
    ...rest,
  };
}

function get(url: string, opts: HttpToolOptions, init?: Json): Promise<Json> {
  return httpFetch(init === undefined ? [url] : [url, init], opts, new AbortController().signal);
}

/** Asserts that `promise` rejects with a ToolError of `code` (and a message matching). */
async function rejects(promise: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(e instanceof ToolError, `expected a ToolError ${code}, got ${e}`);
    assert.equal(e.code, code, e.message);
    if (message) assert.match(e.message, message);
    return true;
  });
}

Deno.test("hostAllowed() matches exact hosts, *.suffix patterns and *", () => {
  assert.equal(hostAllowed("api.example.com", ["api.example.com"]), true);
  assert.equal(hostAllowed("API.example.com".toLowerCase(), ["Api.Example.com"]), true);
  assert.equal(hostAllowed("www.example.com", ["api.example.com"]), false);
  assert.equal(hostAllowed("a.example.com", ["*.example.com"]), true);
  assert.equal(hostAllowed("a.b.example.com", ["*.example.com"]), true);
  assert.equal(hostAllowed("example.com", ["*.example.com"]), false);
  assert.equal(hostAllowed("evilexample.com", ["*.example.com"]), false);
  assert.equal(hostAllowed("example.com.evil.net", ["*.example.com"]), false);
  assert.equal(hostAllowed("anything.net", ["*"]), true);
  assert.equal(hostAllowed("anything.net", []), false);
});

Deno.test("a host that is not on the allowlist is refused with HTTP_FORBIDDEN before any request", async () => {
  const net = fakeNet();
  await rejects(
    get("https://other.example.net/x", options({ allow: ["api.example.com"], fetch: net.fetch })),
    "HTTP_FORBIDDEN",
    /other\.example\.net is not on the allowlist/,
  );
  await rejects(
    get("https://api.example.com/", options({ allow: [], fetch: net.fetch })),
    "HTTP_FORBIDDEN",
  );
  assert.equal(net.requests.length, 0);
});

Deno.test('"*" allows public hosts and the result has status, headers and body', async () => {
  const net = fakeNet(() =>
    new Response("hello", { status: 201, statusText: "Created", headers: { "x-a": "1" } })
  );
  const result = await get(
    "https://api.example.com/items?q=1",
    options({ fetch: net.fetch }),
  ) as Record<string, Json>;
  assert.equal(result.ok, true);
  assert.equal(result.status, 201);
  assert.equal(result.statusText, "Created");
  assert.equal(result.url, "https://api.example.com/items?q=1");
  assert.equal(result.body, "hello");
  assert.equal((result.headers as Record<string, string>)["x-a"], "1");
  assert.equal(result.json, undefined, "not JSON: no json field");
  assert.deepEqual(net.requests.map((r) => r.url), ["https://api.example.com/items?q=1"]);
});

Deno.test("isPrivateAddress() knows loopback, private, link-local, CGNAT and IPv6 local ranges", () => {
  const privateOnes = [
    "127.0.0.1",
    "127.255.0.9",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "100.127.255.254",
    "0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::FFFF:169.254.169.254",
  ];
  for (const a of privateOnes) assert.equal(isPrivateAddress(a), true, a);
  const publicOnes = [PUBLIC_IP, "8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111"];
  for (const a of publicOnes) assert.equal(isPrivateAddress(a), false, a);
});

Deno.test("private, loopback, link-local, CGNAT and IPv6 local addresses are refused even with *", async () => {
  const net = fakeNet();
  const urls = [
    "http://127.0.0.1/",
    "http://127.1:8080/", // the URL parser makes it 127.0.0.1
    "http://2130706433/", // 127.0.0.1 as one number
    "http://10.0.0.5/",
    "http://172.20.1.1/",
    "http://192.168.0.10/",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.10.1/",
    "http://0.0.0.0:5432/",
    "http://[::1]/",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://[fd00::1]/",
    "http://[fe80::1]/",
    "http://localhost:54321/",
    "http://metadata.google.internal/computeMetadata/v1/",
  ];
  for (const url of urls) {
    await rejects(get(url, options({ fetch: net.fetch })), "HTTP_FORBIDDEN", /private or metadata/);
  }
  assert.equal(net.requests.length, 0, "no request left the process");
});

Deno.test({
  name: "an IPv4-mapped IPv6 literal is refused like the IPv4 address it maps",
  // Regression (fixed): http_tool.ts isPrivateAddress only unwraps the dotted ::ffff:a.b.c.d form.
  fn: async () => {
    const net = fakeNet();
    // the URL parser writes [::ffff:127.0.0.1] as [::ffff:7f00:1]
    for (const url of ["http://[::ffff:127.0.0.1]/", "http://[::ffff:169.254.169.254]/"]) {
      await rejects(get(url, options({ fetch: net.fetch })), "HTTP_FORBIDDEN", /private/);
    }
    assert.equal(net.requests.length, 0);
  },
});

Deno.test("IPv4-translated, ISATAP, Teredo, NAT64 and site-local literals that carry a private address are refused", async () => {
  const net = fakeNet();
  const urls = [
    "http://[::ffff:0:127.0.0.1]/", // IPv4-translated (SIIT): the URL parser keeps it as hex
    "http://[::ffff:0:7f00:1]/",
    "http://[::ffff:0:169.254.169.254]/",
    "http://[0:0:0:0:ffff:0:a00:1]/", // 10.0.0.1
    "http://[::127.0.0.1]/", // IPv4-compatible
    "http://[::0:5efe:127.0.0.1]/", // ISATAP interface id
    "http://[fe80::200:5efe:a9fe:a9fe]/",
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", // Teredo
    "http://[64:ff9b:1::a9fe:a9fe]/", // local-use NAT64
    "http://[fec0::1]/", // site-local
    "http://localhost./",
    "http://api.localhost/",
  ];
  for (const url of urls) {
    await rejects(get(url, options({ fetch: net.fetch })), "HTTP_FORBIDDEN", /private or metadata/);
  }
  assert.equal(net.requests.length, 0, "no request left the process");
  for (const a of ["::ffff:0:127.0.0.1", "::ffff:0:a00:1", "2606:4700::5efe:7f00:1"]) {
    assert.equal(isPrivateAddress(a), true, a);
  }
  // the same forms around a public address are not private (only the embedded part counts)
  for (const a of ["2606:4700::5efe:808:808", "::ffff:8.8.8.8"]) {
    assert.equal(isPrivateAddress(a), false, a);
  }
});

Deno.test("a name that resolves to an IPv4-translated address is refused", async () => {
  const net = fakeNet();
  const names = {
    "siit.example.com": ["::ffff:0:7f00:1"],
    "v4t.example.com": ["::ffff:0:10.0.0.9"],
  };
  for (const host of Object.keys(names)) {
    await rejects(
      get(`https://${host}/`, options({ names, fetch: net.fetch })),
      "HTTP_FORBIDDEN",
      /resolves to .*private or metadata/,
    );
  }
  assert.equal(net.requests.length, 0);
});

Deno.test("a public-looking name that resolves to a private address is refused", async () => {
  const net = fakeNet();
  const names: Record<string, string[]> = {
    "internal.example.com": ["10.0.0.7"],
    "meta.example.com": ["169.254.169.254"],
    "cgnat.example.com": ["100.100.100.200"],
    "mixed.example.com": [PUBLIC_IP, "192.168.1.20"],
    "v6.example.com": ["fd00::2"],
    "mapped.example.com": ["::ffff:127.0.0.1"],
    "loop6.example.com": ["::1"],
  };
  for (const host of Object.keys(names)) {
    await rejects(
      get(`https://${host}/`, options({ names, fetch: net.fetch })),
      "HTTP_FORBIDDEN",
      new RegExp(`${host.replaceAll(".", "\\.")} resolves to .*private or metadata`),
    );
  }
  assert.equal(net.requests.length, 0);
});

Deno.test({
  name: "a name that resolves to an IPv4-mapped address in hex form is refused",
  // Regression (fixed): http_tool.ts isPrivateAddress only unwraps the dotted ::ffff:a.b.c.d form.
  fn: async () => {
    const net = fakeNet();
    const names = { "hex.example.com": ["::ffff:7f00:1"] };
    await rejects(
      get("https://hex.example.com/", options({ names, fetch: net.fetch })),
      "HTTP_FORBIDDEN",
    );
    assert.equal(net.requests.length, 0);
  },
});

Deno.test("a redirect to a private address, a host off the allowlist or another scheme is refused", async () => {
  const cases: [string, HttpToolOptions["allow"]][] = [
    ["http://169.254.169.254/latest/meta-data/", ["*"]],
    ["http://[::1]:8080/", ["*"]],
    ["https://internal.example.com/", ["*"]],
    ["https://elsewhere.example.org/", ["api.example.com"]],
    ["file:///etc/passwd", ["*"]],
  ];
  for (const [location, allow] of cases) {
    const net = fakeNet((url) =>
      url.hostname === "api.example.com"
        ? new Response(null, { status: 302, headers: { location } })
        : new Response("should not be reached")
    );
    const names = { "internal.example.com": ["10.1.1.1"] };
    await rejects(
      get("https://api.example.com/start", options({ allow, names, fetch: net.fetch })),
      "HTTP_FORBIDDEN",
    );
    assert.deepEqual(net.requests.map((r) => r.url), ["https://api.example.com/start"], location);
  }
});

Deno.test("redirects are followed to allowed hosts, a 303 turns a POST into a GET, and six are too many", async () => {
  const net = fakeNet((url) => {
    if (url.pathname === "/post") {
      return new Response(null, { status: 303, headers: { location: "/done" } });
    }
    if (url.pathname === "/done") return new Response("done");
    const n = Number(url.pathname.slice(1));
    return new Response(null, { status: 302, headers: { location: `/${n + 1}` } });
  });
  const opts = options({ allow: ["api.example.com"], fetch: net.fetch });
  const done = await get("https://api.example.com/post", opts, {
    method: "POST",
    body: "x=1",
  }) as Record<string, Json>;
  assert.equal(done.body, "done");
  assert.equal(done.url, "https://api.example.com/done");
  assert.deepEqual(net.requests.map((r) => [r.method, r.body]), [["POST", "x=1"], [
    "GET",
    undefined,
  ]]);
  await rejects(get("https://api.example.com/0", opts), "HTTP_ERROR", /more than 5 redirects/);
});

Deno.test("bad arguments and non-http schemes are refused", async () => {
  const opts = options({ fetch: fakeNet().fetch });
  await rejects(httpFetch([42], opts, new AbortController().signal), "BAD_ARGUMENTS");
  await rejects(get("not a url", opts), "BAD_ARGUMENTS", /not a URL/);
  await rejects(get("https://api.example.com/", opts, [1] as Json), "BAD_ARGUMENTS");
  await rejects(get("ftp://api.example.com/file", opts), "HTTP_FORBIDDEN", /only http and https/);
});

// ---- against a local server (allowPrivate) ---------------------------------------------------

/** Routes: /json, /text, /big (64 KiB), /slow (headers after 3 s), /stall (body never ends). */
function localServer() {
  return serve(async (request, closing) => {
    const path = new URL(request.url).pathname;
    switch (path) {
      case "/json":
        return json({ hello: "world", method: request.method, body: await request.text() });
      case "/text":
        return new Response('{"looks": "like json"}', {
          headers: { "content-type": "text/plain" },
        });
      case "/big":
        return new Response("x".repeat(64 * 1024));
      case "/slow":
        await pause(3000, closing);
        return new Response("late");
      case "/stall": {
        const body = new ReadableStream<Uint8Array>({
          start(controller) {
            controller.enqueue(new TextEncoder().encode("first bytes"));
            closing.addEventListener("abort", () => controller.close());
          },
        });
        return new Response(body);
      }
      default:
        return new Response("not found", { status: 404 });
    }
  });
}

Deno.test("allowPrivate lets a test reach a local server, and JSON responses are parsed", async () => {
  const server = localServer();
  try {
    const opts: HttpToolOptions = { allow: ["127.0.0.1"], allowPrivate: true };
    const result = await get(`${server.url}/json`, opts, {
      method: "POST",
      body: "ping",
    }) as Record<string, Json>;
    assert.equal(result.status, 200);
    assert.deepEqual(result.json, { hello: "world", method: "POST", body: "ping" });
    const text = await get(`${server.url}/text`, opts) as Record<string, Json>;
    assert.equal(text.json, undefined, "text/plain is not parsed unless asked");
    const asked = await get(`${server.url}/text`, opts, { json: true }) as Record<string, Json>;
    assert.deepEqual(asked.json, { looks: "like json" });
    await rejects(get(`${server.url}/big`, opts, { json: true }), "HTTP_BAD_JSON");
    const missing = await get(`${server.url}/nope`, opts) as Record<string, Json>;
    assert.deepEqual([missing.ok, missing.status], [false, 404]);
  } finally {
    await server.close();
  }
});

Deno.test("without allowPrivate a local server is refused even when it is on the allowlist", async () => {
  const server = localServer();
  try {
    await rejects(get(`${server.url}/json`, { allow: ["127.0.0.1"] }), "HTTP_FORBIDDEN");
  } finally {
    await server.close();
  }
});

Deno.test("a body over maxResponseBytes fails with HTTP_TOO_LARGE", async () => {
  const server = localServer();
  try {
    const opts: HttpToolOptions = {
      allow: ["127.0.0.1"],
      allowPrivate: true,
      maxResponseBytes: 16 * 1024,
    };
    await rejects(get(`${server.url}/big`, opts), "HTTP_TOO_LARGE", /larger than 16384 bytes/);
    const fits = await get(`${server.url}/big`, { ...opts, maxResponseBytes: 64 * 1024 }) as Record<
      string,
      Json
    >;
    assert.equal((fits.body as string).length, 64 * 1024);
  } finally {
    await server.close();
  }
});

Deno.test("a server slower than timeoutMs fails the call with HTTP_TIMEOUT", async () => {
  const server = localServer();
  try {
    const opts: HttpToolOptions = { allow: ["127.0.0.1"], allowPrivate: true, timeoutMs: 200 };
    const started = performance.now();
    await rejects(get(`${server.url}/slow`, opts), "HTTP_TIMEOUT");
    assert.ok(performance.now() - started < 2500, "gave up long before the 3 s reply");
  } finally {
    await server.close();
  }
});

Deno.test({
  name: "a body that stalls past timeoutMs fails the call with HTTP_TIMEOUT too",
  // Regression (fixed): http_tool.ts httpFetch reads the body (readCapped) outside the try that maps the
  // timeout, so the AbortError escapes and the task sees TOOL_FAILED.
  fn: async () => {
    const server = localServer();
    try {
      const opts: HttpToolOptions = { allow: ["127.0.0.1"], allowPrivate: true, timeoutMs: 200 };
      await rejects(get(`${server.url}/stall`, opts), "HTTP_TIMEOUT");
    } finally {
      await server.close();
    }
  },
});

/**
 * A raw TCP server that answers every connection with headers promising `length` bytes,
 * sends `sent` of them and then stalls (neither more bytes nor a close) until closed.
 */
function stallingServer(length = 100, sent = "first") {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      const head =
        `HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${length}\r\n\r\n`;
      conn.read(new Uint8Array(4096)).then(() => conn.write(new TextEncoder().encode(head + sent)))
        .catch(() => {});
    }
  })().catch(() => {});
  return {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    close() {
      for (const conn of conns) {
        try {
          conn.close();
        } catch { /* already closed by the client */ }
      }
      listener.close();
    },
  };
}

Deno.test("a server that sends its headers and then stalls mid-body ends the call with HTTP_TIMEOUT, not TOOL_FAILED", async () => {
  const server = stallingServer();
  try {
    const opts: HttpToolOptions = { allow: ["127.0.0.1"], allowPrivate: true, timeoutMs: 300 };
    const started = performance.now();
    await rejects(get(`${server.url}/`, opts), "HTTP_TIMEOUT", /did not arrive within/);
    assert.ok(performance.now() - started < 2500, "gave up at the timeout");
  } finally {
    server.close();
  }
});

// ---- through a task ---------------------------------------------------------------------------

const { test } = dbTests("engine_http_tool");

test("a task fetches JSON from an allowed host, and a forbidden host rejects its await with HTTP_FORBIDDEN", async (db) => {
  const server = localServer();
  try {
    const h = harness(db.store, { tools: { http: { allow: ["127.0.0.1"], allowPrivate: true } } });
    const run = await runTaskToEnd(
      h,
      `export default async function ({ base }) {
        const response = await tools.http.fetch(base + "/json", { method: "PUT", body: "b" });
        let refused;
        try {
          await tools.http.fetch("https://not-allowed.example.com/");
        } catch (e) {
          refused = { code: e.code, message: e.message };
        }
        return { status: response.status, json: response.json, refused };
      }`,
      { base: server.url },
    );
    assert.equal(run.status, "completed", JSON.stringify(run.error));
    assert.deepEqual(run.result, {
      status: 200,
      json: { hello: "world", method: "PUT", body: "b" },
      refused: {
        code: "HTTP_FORBIDDEN",
        message: "http.fetch: not-allowed.example.com is not on the allowlist (QUICKJS_HTTP_ALLOW)",
      },
    });
    const calls = await db.store.listCalls(h.invocations[0]!.runId);
    assert.deepEqual(calls.map((c) => [c.service, c.path, c.status]), [
      ["http", ["fetch"], "succeeded"],
      ["http", ["fetch"], "failed"],
    ]);
  } finally {
    await server.close();
  }
});

test("a task's fetch of a metadata address is refused with HTTP_FORBIDDEN even with *", async (db) => {
  const h = harness(db.store, { tools: { http: { allow: ["*"] } } });
  const run = await runTaskToEnd(
    h,
    `export default async function () {
      try {
        return await tools.http.fetch("http://169.254.169.254/latest/meta-data/iam/");
      } catch (e) {
        return e.code;
      }
    }`,
  );
  assert.equal(run.result, "HTTP_FORBIDDEN");
});
