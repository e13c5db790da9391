/**
 * tools.http.fetch: fetch for tasks, limited to an allowlist of hosts and never to private,
 * loopback, link-local or cloud-metadata addresses (checked for every redirect hop).
 */
import type { Json } from "../sandbox/vm.ts";
import { ToolError } from "./tool_errors.ts";

export interface HttpToolOptions {
  /** Host patterns: "api.example.com", "*.example.com", or "*" for any public host. */
  allow: string[];
  /** Tests only: let tasks reach loopback and private addresses. */
  allowPrivate?: boolean;
  timeoutMs?: number;
  maxResponseBytes?: number;
  fetch?: typeof fetch;
  /** Resolves a host name to addresses; defaults to Deno.resolveDns (A and AAAA). */
  resolve?: (host: string) => Promise<string[]>;
}

export const HTTP_DEFAULTS = Object.freeze({
  timeoutMs: 30_000,
  maxResponseBytes: 1024 * 1024,
  maxRedirects: 5,
});

interface FetchInit {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  /** Parse the body as JSON into `json`. Default: when the response says application/json. */
  json?: boolean;
}

/** Reads QUICKJS_HTTP_ALLOW (comma-separated host patterns; unset: none). */
export function httpOptionsFromEnv(
  env: { get(name: string): string | undefined },
): HttpToolOptions {
  const allow = (env.get("QUICKJS_HTTP_ALLOW") ?? "").split(",").map((s) => s.trim()).filter(
    Boolean,
  );
  return { allow };
}

export async function httpFetch(
  args: Json[],
  options: HttpToolOptions,
  signal: AbortSignal,
): Promise<Json> {
  const [target, rawInit] = args;
  if (typeof target !== "string") {
    throw new ToolError("BAD_ARGUMENTS", "http.fetch(url, init?): url must be a string");
  }
  const init = (rawInit ?? {}) as FetchInit;
  if (typeof init !== "object" || Array.isArray(init)) {
    throw new ToolError("BAD_ARGUMENTS", "http.fetch(url, init?): init must be an object");
  }
  const timeout = AbortSignal.timeout(options.timeoutMs ?? HTTP_DEFAULTS.timeoutMs);
  const abort = AbortSignal.any([signal, timeout]);
  const doFetch = options.fetch ?? fetch;
  let url = parseUrl(target);
  let method = (init.method ?? "GET").toUpperCase();
  let body: string | undefined = init.body;
  for (let hop = 0;; hop++) {
    await checkDestination(url, options);
    let response: Response;
    try {
      response = await doFetch(url, {
        method,
        headers: init.headers,
        body,
        redirect: "manual",
        signal: abort,
      });
    } catch (e) {
      if (timeout.aborted) {
        throw new ToolError(
          "HTTP_TIMEOUT",
          `http.fetch ${url.host}: no response within the timeout`,
        );
      }
      throw new ToolError("HTTP_ERROR", `http.fetch ${url.host}: ${(e as Error).message}`);
    }
    const location = response.headers.get("location");
    if (response.status >= 300 && response.status < 400 && location) {
      await response.body?.cancel();
      if (hop >= HTTP_DEFAULTS.maxRedirects) {
        throw new ToolError(
          "HTTP_ERROR",
          `http.fetch: more than ${HTTP_DEFAULTS.maxRedirects} redirects`,
        );
      }
      url = parseUrl(new URL(location, url).toString());
      if (
        response.status === 303 ||
        ((response.status === 301 || response.status === 302) && method === "POST")
      ) {
        method = "GET";
        body = undefined;
      }
      continue;
    }
    let text: string;
    try {
      const maxBytes = options.maxResponseBytes ?? HTTP_DEFAULTS.maxResponseBytes;
      const bytes = await readCapped(
        response.body,
        maxBytes,
        () =>
          new ToolError(
            "HTTP_TOO_LARGE",
            `http.fetch: the response is larger than ${maxBytes} bytes`,
          ),
        abort,
      );
      text = new TextDecoder().decode(bytes);
    } catch (e) {
      if (e instanceof ToolError) throw e;
      if (timeout.aborted) {
        throw new ToolError(
          "HTTP_TIMEOUT",
          `http.fetch ${url.host}: the body did not arrive within the timeout`,
        );
      }
      throw new ToolError("HTTP_ERROR", `http.fetch ${url.host}: ${(e as Error).message}`);
    }
    const headers: Record<string, string> = {};
    response.headers.forEach((value, key) => (headers[key] = value));
    const result: Record<string, Json> = {
      ok: response.ok,
      status: response.status,
      statusText: response.statusText,
      url: url.toString(),
      headers,
      body: text,
    };
    const isJson = init.json ?? /\bjson\b/.test(headers["content-type"] ?? "");
    if (isJson) {
      try {
        result.json = JSON.parse(text) as Json;
      } catch {
        if (init.json) throw new ToolError("HTTP_BAD_JSON", "http.fetch: the response is not JSON");
      }
    }
    return result;
  }
}

function parseUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ToolError("BAD_ARGUMENTS", `http.fetch: not a URL: ${text}`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new ToolError(
      "HTTP_FORBIDDEN",
      `http.fetch: only http and https URLs, not ${url.protocol}`,
    );
  }
  return url;
}

async function checkDestination(url: URL, options: HttpToolOptions): Promise<void> {
  const host = url.hostname.replace(/^\[|\]$/g, "").toLowerCase();
  if (!hostAllowed(host, options.allow)) {
    throw new ToolError(
      "HTTP_FORBIDDEN",
      `http.fetch: ${host} is not on the allowlist (QUICKJS_HTTP_ALLOW)`,
    );
  }
  if (options.allowPrivate) return;
  if (
    /^(metadata|metadata\.google\.internal|instance-data)(\.|$)/.test(host) ||
    // RFC 6761: localhost and every name under it are loopback, with or without the root dot
    /(^|\.)localhost\.?$/.test(host)
  ) {
    throw new ToolError("HTTP_FORBIDDEN", `http.fetch: ${host} is a private or metadata address`);
  }
  const addresses = isIpAddress(host) ? [host] : await resolveHost(host, options);
  for (const address of addresses) {
    if (isPrivateAddress(address)) {
      throw new ToolError(
        "HTTP_FORBIDDEN",
        `http.fetch: ${host} resolves to ${address}, a private or metadata address`,
      );
    }
  }
}

async function resolveHost(host: string, options: HttpToolOptions): Promise<string[]> {
  if (options.resolve) return await options.resolve(host);
  const results = await Promise.allSettled([
    Deno.resolveDns(host, "A"),
    Deno.resolveDns(host, "AAAA"),
  ]);
  const addresses = results.flatMap((r) => r.status === "fulfilled" ? r.value : []);
  if (addresses.length === 0) {
    throw new ToolError("HTTP_ERROR", `http.fetch: cannot resolve ${host}`);
  }
  return addresses;
}

export function hostAllowed(host: string, allow: string[]): boolean {
  return allow.some((pattern) => {
    const p = pattern.toLowerCase();
    if (p === "*") return true;
    if (p.startsWith("*.")) return host.endsWith(p.slice(1)) && host.length > p.length - 1;
    return host === p;
  });
}

function isIpAddress(host: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(host) || host.includes(":");
}

/** True for loopback, private, link-local (cloud metadata), CGNAT, multicast and reserved. */
export function isPrivateAddress(address: string): boolean {
  const a = address.toLowerCase().replace(/^\[|\]$/g, "");
  if (a.includes(":")) {
    const g = expandIPv6(a);
    if (!g) return true; // not an address this can read: refuse it
    // :: and ::1, then the forms that carry an IPv4 address in the last 32 bits, in whatever
    // notation the URL parser or the resolver chose (::ffff:7f00:1 is 127.0.0.1):
    // ::a.b.c.d (compatible), ::ffff:a.b.c.d (mapped), ::ffff:0:a.b.c.d (translated, SIIT)
    if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0) {
      if (g[4] === 0 && g[5] === 0 && g[6] === 0 && g[7]! <= 1) return true;
      if (
        (g[4] === 0 && (g[5] === 0 || g[5] === 0xffff)) || (g[4] === 0xffff && g[5] === 0)
      ) {
        return isPrivateAddress(embeddedIPv4(g));
      }
    }
    // ISATAP (any prefix, interface id 0:5efe or 200:5efe) carries the IPv4 tunnel end point
    if ((g[4]! & 0xfdff) === 0 && g[5] === 0x5efe && isPrivateAddress(embeddedIPv4(g))) {
      return true;
    }
    return (g[0]! & 0xfe00) === 0xfc00 || // fc00::/7 unique local
      (g[0]! & 0xffc0) === 0xfe80 || // fe80::/10 link-local
      (g[0]! & 0xffc0) === 0xfec0 || // fec0::/10 site-local (deprecated, still routed inside)
      (g[0]! & 0xff00) === 0xff00 || // ff00::/8 multicast
      (g[0] === 0x64 && g[1] === 0xff9b) || // 64:ff9b::/96 and 64:ff9b:1::/48 NAT64: IPv4 space
      (g[0] === 0x100 && g[1] === 0 && g[2] === 0 && g[3] === 0) || // 100::/64 discard
      (g[0] === 0x2001 && g[1] === 0) || // 2001::/32 Teredo: an IPv4 end point, obfuscated
      (g[0] === 0x2001 && g[1] === 0xdb8) || // documentation
      g[0] === 0x2002; // 6to4 reaches IPv4 space
  }
  const [x, y] = a.split(".").map(Number) as [number, number, number, number];
  return x === 0 || x === 10 || x === 127 || x >= 224 ||
    (x === 100 && y >= 64 && y < 128) || (x === 169 && y === 254) ||
    (x === 172 && y >= 16 && y < 32) || (x === 192 && y === 168) ||
    (x === 192 && y === 0) || (x === 198 && (y === 18 || y === 19));
}

/** The IPv4 address in the last 32 bits of an IPv6 address's groups, dotted. */
function embeddedIPv4(g: number[]): string {
  return `${g[6]! >> 8}.${g[6]! & 255}.${g[7]! >> 8}.${g[7]! & 255}`;
}

/** The eight 16-bit groups of an IPv6 address (an IPv4 tail allowed), or undefined. */
function expandIPv6(address: string): number[] | undefined {
  let text = address.split("%")[0]!;
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [b0, b1, b2, b3] = v4.slice(1).map(Number) as [number, number, number, number];
    if ([b0, b1, b2, b3].some((b) => b > 255)) return undefined;
    text = text.slice(0, v4.index) +
      `${((b0 << 8) | b1).toString(16)}:${((b2 << 8) | b3).toString(16)}`;
  }
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const head = halves[0] ? halves[0].split(":") : [];
  const tail = halves.length === 2 && halves[1] ? halves[1].split(":") : [];
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return undefined;
  const groups = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill("0"), ...tail];
  if (!groups.every((x) => /^[0-9a-f]{1,4}$/.test(x))) return undefined;
  return groups.map((x) => parseInt(x, 16));
}

/**
 * The bytes of a stream, refusing more than `maxBytes` (counted while reading: a
 * Content-Length may be absent or lie). `tooLarge` makes the error. When `signal` aborts,
 * the read stops at once with the signal's reason and the stream is cancelled: a peer
 * that sends headers and then stalls must not hold the reader forever.
 */
export async function readCapped(
  stream: ReadableStream<Uint8Array> | null,
  maxBytes: number,
  tooLarge: () => Error,
  signal?: AbortSignal,
): Promise<Uint8Array> {
  if (!stream) return new Uint8Array();
  const reader = stream.getReader();
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal!.reason);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener("abort", onAbort, { once: true });
  });
  aborted.catch(() => {}); // rejected only when raced below
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = signal
        ? await Promise.race([reader.read(), aborted])
        : await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > maxBytes) throw tooLarge();
      chunks.push(value);
    }
  } catch (e) {
    await reader.cancel().catch(() => {});
    throw e;
  } finally {
    if (onAbort) signal?.removeEventListener("abort", onAbort);
  }
  const all = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    all.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return all;
}
