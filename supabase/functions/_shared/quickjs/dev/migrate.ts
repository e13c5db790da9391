/**
 * Applies supabase/migrations/*.sql in order, recording each in
 * supabase_migrations.schema_migrations (the table the Supabase CLI keeps), so a database
 * set up here and one set up by `supabase db push` agree on what has been applied.
 * Used by the demo, the local runner, the worker and the tests; the deployed function
 * never migrates.
 */

export const MIGRATIONS_DIR = new URL("../../../../migrations/", import.meta.url);

/** Runs SQL text (several statements) or a query with parameters. */
export interface SqlExecutor {
  exec(sql: string): Promise<void>;
  query(sql: string, params: string[]): Promise<{ rows: Record<string, unknown>[] }>;
}

/** An executor over a PGlite instance. */
export function pgliteExecutor(db: {
  exec(sql: string): Promise<unknown>;
  query(sql: string, params: string[]): Promise<{ rows: unknown[] }>;
}): SqlExecutor {
  return {
    exec: async (sql) => void await db.exec(sql),
    query: async (sql, params) =>
      (await db.query(sql, params)) as { rows: Record<string, unknown>[] },
  };
}

/** An executor over a postgres.js connection (one connection: migrations are transactions). */
export function postgresExecutor(sql: {
  unsafe(text: string, params?: string[]): PromiseLike<unknown>;
}): SqlExecutor {
  return {
    exec: async (text) => void await sql.unsafe(text),
    query: async (text, params) => ({
      rows: (await sql.unsafe(text, params)) as Record<string, unknown>[],
    }),
  };
}

export interface Migration {
  version: string;
  name: string;
  sql: string;
}

export async function readMigrations(dir: URL = MIGRATIONS_DIR): Promise<Migration[]> {
  const files: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isFile && /^\d{14}_.+\.sql$/.test(entry.name)) files.push(entry.name);
  }
  files.sort();
  return await Promise.all(files.map(async (file) => ({
    version: file.slice(0, 14),
    name: file.slice(15, -4),
    sql: await Deno.readTextFile(new URL(file, dir)),
  })));
}

/**
 * Serializes migration runners on one database: every step below takes it, as a
 * transaction-level advisory lock, so it is released at commit or rollback.
 */
const MIGRATION_LOCK =
  "select pg_advisory_xact_lock(hashtext('supabase_migrations.schema_migrations'))";

/** Runs `fn` in a transaction that holds MIGRATION_LOCK. */
async function locked<T>(db: SqlExecutor, fn: () => Promise<T>): Promise<T> {
  await db.exec("begin");
  try {
    await db.exec(MIGRATION_LOCK);
    const result = await fn();
    await db.exec("commit");
    return result;
  } catch (e) {
    await db.exec("rollback").catch(() => {});
    throw e;
  }
}

/**
 * Applies the migrations not applied yet; returns the versions it applied. Each migration
 * runs in its own transaction with its record, under an advisory lock, and is checked
 * again once the lock is held: two runners at once (two workers starting, a test process
 * beside another) apply each migration exactly once, and a migration that fails leaves
 * neither its changes nor its record. The executor must be one connection.
 */
export async function migrate(db: SqlExecutor, dir?: URL): Promise<string[]> {
  await locked(db, () =>
    db.exec(`
      create schema if not exists supabase_migrations;
      create table if not exists supabase_migrations.schema_migrations (
        version text primary key, statements text[], name text);`));
  const done: string[] = [];
  for (const migration of await readMigrations(dir)) {
    const applied = await locked(db, async () => {
      const recorded = await db.query(
        "select 1 from supabase_migrations.schema_migrations where version = $1",
        [migration.version],
      );
      if (recorded.rows.length) return false;
      await db.exec(migration.sql);
      await db.query(
        "insert into supabase_migrations.schema_migrations (version, name) values ($1, $2)",
        [migration.version, migration.name],
      );
      return true;
    });
    if (applied) done.push(migration.version);
  }
  return done;
}
