/** Runs the project's CLIs as real subprocesses and reads what they print. */
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  /** The JSON object on the last line of stdout, when there is one. */
  json: Record<string, unknown> | undefined;
}

export async function runScript(
  script: string,
  args: string[],
  options: { env?: Record<string, string>; stdin?: string } = {},
): Promise<CliResult> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--frozen", `${ROOT}scripts/${script}`, ...args],
    cwd: ROOT,
    env: options.env,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const out = await child.output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  const last = stdout.trim().split("\n").pop() ?? "";
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(last);
  } catch {
    json = undefined;
  }
  return { code: out.code, stdout, stderr, json };
}

/** `deno task run-task` as a subprocess; `db` is the test database (URL) or undefined for PGlite. */
export function runTask(
  file: string,
  options: { input?: unknown; db?: string; flags?: string[] } = {},
): Promise<CliResult> {
  return runScript("run-task.ts", [
    file,
    ...(options.input === undefined ? [] : ["--input", JSON.stringify(options.input)]),
    ...(options.db ? ["--db", options.db] : []),
    ...(options.flags ?? []),
  ]);
}
