/**
 * Starts scripts/edge-runtime/harness.ts under Deno 2.1.4 (the Deno inside Supabase's edge
 * runtime) as a real process and talks to it over HTTP: one EdgeWorker is one worker.
 */
import { ROOT } from "../support/cli.ts";

export const EDGE_DENO_VERSION = "2.1.4";
export const SERVICE_KEY = "sb_secret_platform_test_key";

export interface EdgeEvent {
  event: string;
  ms: number;
  reason?: string;
  [key: string]: unknown;
}

export interface EdgeStats {
  pid: number;
  deno: string;
  externalCountsWasm: boolean;
  peak: { bytes: number; heapUsed: number; external: number; wasm: number; wasmMemories: number };
  cpuMs: number;
  wallMs: number;
  retired: string | null;
}

export interface EdgeWorker {
  url: string;
  events: EdgeEvent[];
  /** Everything else the process printed (the function's own logs). */
  output: string[];
  stats(): Promise<EdgeStats>;
  /** POST/GET under /quickjs with the service key. */
  // deno-lint-ignore no-explicit-any
  call(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }>;
  /** The process's end: its exit code and the last "killed" or "exit" event. */
  ended: Promise<{ code: number; last: EdgeEvent | undefined }>;
  stop(): Promise<void>;
}

let denoPath: Promise<string | null> | undefined;

/**
 * The Deno 2.1.4 binary: EDGE_DENO, or the one `npx -y deno@2.1.4` installs; null when it
 * cannot be had (no npm registry), so the tests can skip with a reason.
 */
export function edgeDeno(): Promise<string | null> {
  return denoPath ??= (async () => {
    const given = Deno.env.get("EDGE_DENO");
    if (given) return given;
    try {
      const out = await new Deno.Command("npx", {
        args: ["-y", `deno@${EDGE_DENO_VERSION}`, "eval", "console.log(Deno.execPath())"],
        cwd: Deno.env.get("TMPDIR") ?? "/tmp", // away from the project's v5 lock file
        stdout: "piped",
        stderr: "piped",
      }).output();
      const path = new TextDecoder().decode(out.stdout).trim();
      return out.success && path ? path : null;
    } catch {
      return null;
    }
  })();
}

let vendored: Promise<void> | undefined;

/**
 * What a deploy does first: the edge runtime does not ship an npm package's .wasm, so the
 * function reads the copy `deno task prepare-deploy` puts beside the sandbox (gitignored).
 */
export function prepareDeploy(): Promise<void> {
  return vendored ??= (async () => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--frozen", `${ROOT}scripts/prepare-deploy.ts`],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  })();
}

/** The command that runs the harness, reproducibly: the committed 2.1.4 lock, frozen. */
export function harnessArgs(): string[] {
  return [
    "run",
    "-A",
    "--frozen",
    `--lock=${ROOT}scripts/edge-runtime/deno.lock`,
    `--config=${ROOT}deno.json`,
    `${ROOT}scripts/edge-runtime/harness.ts`,
  ];
}

export async function startEdgeWorker(
  deno: string,
  env: Record<string, string>,
): Promise<EdgeWorker> {
  await prepareDeploy();
  const passed: Record<string, string> = {};
  for (const name of ["PATH", "HOME", "DENO_DIR", "TMPDIR", "SSL_CERT_FILE"]) {
    const value = Deno.env.get(name);
    if (value) passed[name] = value;
  }
  const child = new Deno.Command(deno, {
    args: harnessArgs(),
    cwd: ROOT,
    clearEnv: true,
    env: {
      ...passed,
      NO_COLOR: "1",
      DENO_TLS_CA_STORE: "system,mozilla",
      SUPABASE_SECRET_KEYS: JSON.stringify({ default: SERVICE_KEY }),
      ...env,
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const events: EdgeEvent[] = [];
  const output: string[] = [];
  let listening: (port: number) => void;
  let failed: (e: Error) => void;
  const port = new Promise<number>((resolve, reject) => {
    listening = resolve;
    failed = reject;
  });
  const stdout = (async () => {
    let buffer = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      buffer += chunk;
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        let event: EdgeEvent | undefined;
        try {
          const parsed = JSON.parse(line);
          if (parsed && typeof parsed.event === "string") event = parsed;
        } catch { /* the function's own output */ }
        if (!event) {
          output.push(line);
          continue;
        }
        events.push(event);
        if (event.event === "listening") listening!(event.port as number);
      }
    }
  })();
  const stderr = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      output.push(chunk);
    }
  })();
  const ended = child.status.then(async (status) => {
    await Promise.all([stdout, stderr]);
    failed!(new Error(`the edge worker exited (${status.code}):\n${output.join("\n")}`));
    const last = events.findLast((e) => e.event === "killed" || e.event === "exit");
    return { code: status.code, last };
  });
  const url = `http://127.0.0.1:${await port}`;
  return {
    url,
    events,
    output,
    async stats() {
      return await (await fetch(`${url}/__edge/stats`)).json();
    },
    async call(method, path, body) {
      let response: Response;
      try {
        response = await fetch(`${url}/quickjs${path}`, {
          method,
          headers: { apikey: SERVICE_KEY, "content-type": "application/json" },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
      } catch (e) {
        // the process went away under the request: say why, in the harness's words
        const end = await Promise.race([ended, new Promise((r) => setTimeout(r, 2000))]);
        const last = (end as { last?: EdgeEvent } | undefined)?.last;
        if (last) throw new Error(`the edge worker ended: ${JSON.stringify(last)}`, { cause: e });
        throw e;
      }
      const text = await response.text();
      let json;
      try {
        json = JSON.parse(text);
      } catch {
        json = text;
      }
      return { status: response.status, json };
    },
    ended,
    async stop() {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
      await ended;
    },
  };
}
