/**
 * `--tools module.ts` of run-task and the worker: in-process tools, the module's default
 * export `{ name: (method, args, context) => value }`.
 */
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { CustomTool } from "../../supabase/functions/_shared/quickjs/mod.ts";

export async function loadToolsModule(module?: string): Promise<Record<string, CustomTool>> {
  if (!module) return {};
  let loaded: { default?: unknown };
  try {
    loaded = await import(pathToFileURL(resolve(module)).href);
  } catch (e) {
    throw new Error(`--tools ${module}: ${(e as Error).message}`);
  }
  const tools = loaded.default;
  if (!tools || typeof tools !== "object") {
    throw new Error(`--tools ${module}: the default export must be { name: function }`);
  }
  return tools as Record<string, CustomTool>;
}
