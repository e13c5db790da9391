/**
 * Task files: one JavaScript file per task. The name is the file name (without .js) or a
 * JSDoc `@task name` tag; the JSDoc text is the description; `@limits {json}` and
 * `@tools a, b` set the sandbox limits and the services the task may call; `@retry {json}`
 * restarts a failed run from its input (`{"attempts": 3, "backoff": "10s"}`).
 */
import { basename, extname, join } from "node:path";
import type { PublishedTask, Store, TaskRetry } from "../store/store.ts";
import { LIMIT_BOUNDS, resolveLimits } from "../sandbox/limits.ts";
import { parseDuration } from "../engine/durations.ts";

export interface TaskFile {
  path: string;
  name: string;
  code: string;
  description: string | null;
  limits: Record<string, number>;
  allowedTools: string[] | null;
  retry: TaskRetry | null;
}

export async function readTaskFile(path: string): Promise<TaskFile> {
  const code = await Deno.readTextFile(path);
  const doc = /\/\*\*([\s\S]*?)\*\//.exec(code)?.[1] ?? "";
  // "/** @task x */" on one line has no leading "*" to strip
  const lines = doc.split("\n").map((l) => l.replace(/^\s*\*?\s*/, "").trim());
  const tag = (name: string) =>
    lines.find((l) => l.startsWith(`@${name} `) || l === `@${name}`)?.slice(name.length + 1).trim();
  const name = tag("task") || basename(path, extname(path));
  const description = lines.filter((l) => l && !l.startsWith("@")).join(" ").trim() || null;
  let limits: Record<string, number> = {};
  const limitsTag = tag("limits");
  if (limitsTag) {
    try {
      limits = JSON.parse(limitsTag);
    } catch {
      throw new Error(`${path}: @limits must be JSON, e.g. @limits {"memoryBytes": 33554432}`);
    }
    if (typeof limits !== "object" || limits === null || Array.isArray(limits)) {
      throw new Error(
        `${path}: bad @limits: it must be a JSON object, e.g. {"memoryBytes": 33554432}`,
      );
    }
    const unknown = Object.keys(limits).filter((k) => !(k in LIMIT_BOUNDS));
    if (unknown.length) {
      throw new Error(
        `${path}: bad @limits: unknown limit ${unknown.join(", ")} (known: ${
          Object.keys(LIMIT_BOUNDS).join(", ")
        })`,
      );
    }
    try {
      resolveLimits(limits); // refuse out-of-range limits here, not at run time
    } catch (e) {
      throw new Error(`${path}: bad @limits: ${(e as Error).message}`);
    }
  }
  const toolsTag = tag("tools");
  const allowedTools = toolsTag === undefined ? null : toolsTag.split(/[\s,]+/).filter(Boolean);
  const retryTag = tag("retry");
  const retry = retryTag === undefined ? null : parseRetryTag(path, retryTag);
  return { path, name, code, description, limits, allowedTools, retry };
}

/**
 * `@retry {"attempts": 3, "backoff": "10s", "multiplier": 2}`: attempts in all (1..25), the
 * wait before the second (a duration, at most a day), each next wait times the multiplier.
 */
export function parseRetryTag(path: string, text: string): TaskRetry {
  const bad = (why: string) =>
    new Error(`${path}: bad @retry: ${why}, e.g. @retry {"attempts": 3, "backoff": "10s"}`);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw bad("it must be JSON");
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw bad("not an object");
  const { attempts, backoff, multiplier, ...rest } = raw as Record<string, unknown>;
  if (Object.keys(rest).length) throw bad(`unknown field ${Object.keys(rest).join(", ")}`);
  if (
    typeof attempts !== "number" || !Number.isInteger(attempts) || attempts < 1 || attempts > 25
  ) {
    throw bad("attempts must be a whole number from 1 to 25");
  }
  let backoffMs = 0;
  if (backoff !== undefined) {
    try {
      backoffMs = parseDuration(backoff);
    } catch (e) {
      throw bad(`backoff: ${(e as Error).message}`);
    }
    if (backoffMs > 86_400_000) throw bad("backoff may be a day at most");
  }
  if (
    multiplier !== undefined &&
    (typeof multiplier !== "number" || !(multiplier >= 1 && multiplier <= 10))
  ) {
    throw bad("multiplier must be a number from 1 to 10");
  }
  return { attempts, backoffMs, ...(multiplier !== undefined ? { multiplier } : {}) };
}

/** The .js files of a directory, or the one file given. */
export async function taskPaths(path: string): Promise<string[]> {
  const info = await Deno.stat(path);
  if (info.isFile) return [path];
  const paths: string[] = [];
  for await (const entry of Deno.readDir(path)) {
    if (entry.isFile && /\.(m?js)$/.test(entry.name)) paths.push(join(path, entry.name));
  }
  return paths.sort();
}

export async function publishTasks(
  store: Store,
  path: string,
): Promise<(PublishedTask & { path: string })[]> {
  const published: (PublishedTask & { path: string })[] = [];
  for (const file of await taskPaths(path)) {
    const task = await readTaskFile(file);
    published.push({
      ...await store.publishTask({
        name: task.name,
        code: task.code,
        description: task.description,
        limits: task.limits,
        allowedTools: task.allowedTools,
        retry: task.retry,
      }),
      path: file,
    });
  }
  return published;
}
