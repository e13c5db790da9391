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
    const text = await readCapped(
      response,
      options.maxResponseBytes ?? HTTP_DEFAULTS.maxResponseBytes,
    );
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
    /^(metadata|metadata\.google\.internal|instance-data)(\.|$)/.test(host) || host === "localhost"
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
  const a = address.toLowerCase();
  if (a.includes(":")) {
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(a);
    if (mapped) return isPrivateAddress(mapped[1]!);
    return a === "::" || a === "::1" || /^f[cd]/.test(a) || /^fe[89ab]/.test(a) ||
      /^ff/.test(a) || a.startsWith("64:ff9b:") || a.startsWith("100::") ||
      a.startsWith("2001:db8");
  }
  const [x, y] = a.split(".").map(Number) as [number, number, number, number];
  return x === 0 || x === 10 || x === 127 || x >= 224 ||
    (x === 100 && y >= 64 && y < 128) || (x === 169 && y === 254) ||
    (x === 172 && y >= 16 && y < 32) || (x === 192 && y === 168) ||
    (x === 192 && y === 0) || (x === 198 && (y === 18 || y === 19));
}

async function readCapped(response: Response, maxBytes: number): Promise<string> {
  if (!response.body) return "";
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > maxBytes) {
      await reader.cancel();
      throw new ToolError(
        "HTTP_TOO_LARGE",
        `http.fetch: the response is larger than ${maxBytes} bytes`,
      );
    }
    chunks.push(value);
  }
  const all = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    all.set(chunk, offset);
    offset += chunk.length;
  }
  return new TextDecoder().decode(all);
}
