/**
 * One closed list of error codes (supabase/functions/_shared/quickjs/errors.ts): the SQL
 * raises exactly the codes the list marks `sql`, the TypeScript code writes no code the
 * list does not have, and README's table of codes is the list.
 */
import assert from "node:assert/strict";
import { ERROR_CODES, isErrorCode } from "../supabase/functions/_shared/quickjs/mod.ts";

const ROOT = new URL("../", import.meta.url);
const CODE = /^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$|^[A-Z]{4,}$/;

async function files(dir: URL, ext: string): Promise<URL[]> {
  const found: URL[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const url = new URL(entry.name + (entry.isDirectory ? "/" : ""), dir);
    if (entry.isDirectory) found.push(...await files(url, ext));
    else if (entry.name.endsWith(ext)) found.push(url);
  }
  return found;
}

/** Codes the migrations raise (raise_error('X', …)) or store in an error ('code', 'X'). */
async function sqlCodes(): Promise<Set<string>> {
  const codes = new Set<string>();
  for (const file of await files(new URL("supabase/migrations/", ROOT), ".sql")) {
    const sql = await Deno.readTextFile(file);
    for (const m of sql.matchAll(/raise_error\(\s*'([A-Z_]+)'/g)) codes.add(m[1]!);
    for (const m of sql.matchAll(/'code',\s*'([A-Z_]+)'/g)) codes.add(m[1]!);
  }
  return codes;
}

Deno.test("the SQL raises exactly the codes the list marks sql", async () => {
  const raised = await sqlCodes();
  const marked = new Set(
    Object.entries(ERROR_CODES).filter(([, info]) => "sql" in info).map(([code]) => code),
  );
  for (const code of raised) assert.ok(marked.has(code), `the SQL raises ${code}, not marked sql`);
  for (const code of marked) assert.ok(raised.has(code), `${code} is marked sql; no SQL raises it`);
});

/** Quoted UPPER_SNAKE words that are not error codes: environment names and the like. */
const NOT_CODES =
  /^(QUICKJS_|SUPABASE_|DENO_|DATABASE_URL$|PORT$|NO_COLOR$|HOME$|PATH$|(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)$)/;

Deno.test("every code the TypeScript code writes is in the list", async () => {
  const unknown: string[] = [];
  for (const file of await files(new URL("supabase/functions/", ROOT), ".ts")) {
    const text = await Deno.readTextFile(file);
    // a code in the positions codes take: `code: "X"`, `Error("X", …)`, `=== "X"`
    for (
      const m of text.matchAll(/(?:code:\s*|Error\(\s*(?:\d+,\s*)?|===\s*)"([A-Z][A-Z0-9_]+)"/g)
    ) {
      const word = m[1]!;
      if (CODE.test(word) && !NOT_CODES.test(word) && !isErrorCode(word)) {
        unknown.push(`${word} (${file.pathname.split("/supabase/")[1]})`);
      }
    }
  }
  assert.deepEqual(unknown, [], "codes written in TypeScript that the list does not have");
});

Deno.test("README's table of error codes is the list", async () => {
  const readme = await Deno.readTextFile(new URL("README.md", ROOT));
  const start = readme.indexOf("### Error codes");
  assert.ok(start >= 0, "README has an '### Error codes' section");
  const end = readme.indexOf("\n#", start + 4);
  const section = readme.slice(start, end < 0 ? undefined : end);
  const listed = [...section.matchAll(/^\| `([A-Z_]+)` +\|/gm)].map((m) => m[1]!);
  assert.deepEqual([...listed].sort(), Object.keys(ERROR_CODES).sort());
});
