/**
 * Publishing a file or directory of task files, all or nothing: every file is read and
 * checked first (JSDoc tags, limits, task names), and nothing is published while one of
 * them is wrong. Used by scripts/publish.ts.
 */
import type { PublishedTask, Store } from "../../supabase/functions/_shared/quickjs/mod.ts";
import {
  publishTasks,
  readTaskFile,
  type TaskFile,
  taskPaths,
} from "../../supabase/functions/_shared/quickjs/dev.ts";

/** What quickjs.tasks accepts as a name (constraint tasks_name_format). */
const TASK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export interface TaskFileProblem {
  path: string;
  message: string;
}

export interface PublishedFile extends PublishedTask {
  path: string;
}

export type PublishOutcome =
  | { ok: true; published: PublishedFile[] }
  | { ok: false; problems: TaskFileProblem[] };

/** Reads and checks the task files under `path`; a problem names its file. */
export async function checkTaskFiles(
  path: string,
): Promise<{ files: TaskFile[]; problems: TaskFileProblem[] }> {
  let paths: string[];
  try {
    paths = await taskPaths(path);
  } catch (e) {
    return { files: [], problems: [{ path, message: `cannot read ${path}: ${describe(e)}` }] };
  }
  if (paths.length === 0) {
    return {
      files: [],
      problems: [{ path, message: `${path}: no task files (*.js, *.mjs) in this directory` }],
    };
  }
  const files: TaskFile[] = [];
  const problems: TaskFileProblem[] = [];
  const byName = new Map<string, string>();
  for (const file of paths) {
    let task: TaskFile;
    try {
      task = await readTaskFile(file);
    } catch (e) {
      const message = describe(e);
      problems.push({
        path: file,
        // readTaskFile names the file when the problem is the file's content
        message: message.startsWith(file) ? message : `${file}: cannot read: ${message}`,
      });
      continue;
    }
    if (!TASK_NAME.test(task.name)) {
      problems.push({
        path: file,
        message: `${file}: "${task.name}" is not a task name (letters, digits, _ . -; ` +
          "up to 128 characters; set one with @task name)",
      });
      continue;
    }
    const other = byName.get(task.name);
    if (other) {
      problems.push({
        path: file,
        message: `${file}: task ${task.name} is also defined by ${other}`,
      });
      continue;
    }
    byName.set(task.name, file);
    files.push(task);
  }
  return { files, problems };
}

/** Checks every file, then publishes them all (a new version only where something changed). */
export async function publishTaskFiles(store: Store, path: string): Promise<PublishOutcome> {
  const { problems } = await checkTaskFiles(path);
  if (problems.length) return { ok: false, problems };
  return { ok: true, published: await publishTasks(store, path) };
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
