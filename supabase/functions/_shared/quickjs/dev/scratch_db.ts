/**
 * Scratch databases for tests and benchmarks: find a PostgreSQL server, make a fresh
 * migrated database on it by copying a template migrated once per set of migrations, or
 * fall back to an in-memory PGlite. Supabase's roles are created first, as on Supabase,
 * so the guarded parts of the migrations run.
 */
import postgres from "postgres";
import { migrate, pgliteExecutor, postgresExecutor, readMigrations } from "./migrate.ts";
import { type PgliteDriver, pgliteDriver } from "./pglite.ts";
import { postgresDriver } from "../store/postgres.ts";
import { type SqlDriver, Store } from "../store/store.ts";

export const LOCAL_SERVER_URL = "postgres://postgres@127.0.0.1:5432/postgres";

/** The roles Supabase has (anon, authenticated, service_role), created if missing. */
export const SUPABASE_ROLES = `
  do $$ begin
    if not exists (select 1 from pg_roles where rolname = 'anon') then create role anon nologin; end if;
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then create role authenticated nologin; end if;
    if not exists (select 1 from pg_roles where rolname = 'service_role') then create role service_role nologin bypassrls; end if;
  end $$;`;

/**
 * The server to use: `url` if given, none if `pglite`, else the local server at
 * 127.0.0.1:5432 if it answers within 2 s, else none (null: use PGlite).
 */
export async function findServer(
  options: { url?: string | null; pglite?: boolean } = {},
): Promise<string | null> {
  if (options.url) return options.url;
  if (options.pglite) return null;
  const sql = postgres(LOCAL_SERVER_URL, { max: 1, connect_timeout: 2, onnotice: () => {} });
  try {
    await sql`select 1`;
    return LOCAL_SERVER_URL;
  } catch {
    return null;
  } finally {
    await sql.end({ timeout: 1 }).catch(() => {});
  }
}

/** `server` with another database name. */
export function databaseUrl(server: string, name: string): string {
  const url = new URL(server);
  url.pathname = `/${name}`;
  return url.toString();
}

async function withAdmin<T>(server: string, fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(server, { max: 1, onnotice: () => {} });
  try {
    return await fn(sql);
  } finally {
    await sql.end();
  }
}

/** The template's name: qjs_tpl_ and a hash of the migrations' names and text. */
export async function templateName(dir?: URL): Promise<string> {
  const text = (await readMigrations(dir)).map((m) => `${m.version}_${m.name}\n${m.sql}`).join(
    "\n",
  );
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  const hex = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  return `qjs_tpl_${hex.slice(0, 16)}`;
}

/**
 * The migrated template database for the current migrations, created on first use. Test
 * processes running at once take an advisory lock, so one builds it and the others wait;
 * it is built under another name and renamed when complete, so a builder that died halfway
 * leaves nothing that looks finished. A change to the migrations makes a new template.
 */
export async function migratedTemplate(server: string, dir?: URL): Promise<string> {
  const name = await templateName(dir);
  await withAdmin(server, async (admin) => {
    await admin.unsafe(SUPABASE_ROLES);
    // session-level: held across the CREATE DATABASE, which cannot run in a transaction
    await admin`select pg_advisory_lock(hashtext('quickjs template databases'))`;
    try {
      const [found] = await admin`select 1 from pg_database where datname = ${name}`;
      if (found) return;
      const building = `${name}_building`;
      await admin.unsafe(`drop database if exists ${building} with (force)`);
      await admin.unsafe(`create database ${building}`);
      const sql = postgres(databaseUrl(server, building), { max: 1, onnotice: () => {} });
      try {
        await migrate(postgresExecutor(sql), dir);
      } finally {
        await sql.end();
      }
      await admin.unsafe(`alter database ${building} rename to ${name}`);
    } finally {
      await admin`select pg_advisory_unlock(hashtext('quickjs template databases'))`;
    }
  });
  return name;
}

export interface ScratchDb {
  name: string;
  /** Connection string of the scratch database. */
  url: string;
  drop(): Promise<void>;
}

/**
 * A new database on `server` named after `label`: a copy of the migrated template (default),
 * or empty with `{ migrated: false }` (for tests of the migrations themselves).
 */
export async function createScratchDb(
  server: string,
  label: string,
  options: { migrated?: boolean } = {},
): Promise<ScratchDb> {
  const template = options.migrated === false ? null : await migratedTemplate(server);
  const name = `qjs_t_${label.replace(/\W+/g, "_").toLowerCase().slice(0, 30)}_${
    Date.now().toString(36)
  }${Math.floor(Math.random() * 1e4)}`;
  await withAdmin(server, async (admin) => {
    await admin.unsafe(SUPABASE_ROLES);
    await admin.unsafe(`create database ${name}${template ? ` template ${template}` : ""}`);
  });
  return {
    name,
    url: databaseUrl(server, name),
    drop: () =>
      withAdmin(server, async (admin) => {
        await admin.unsafe(`drop database if exists ${name} with (force)`);
      }),
  };
}

/** A migrated in-memory PGlite with the Supabase roles. */
export async function migratedPglite(): Promise<PgliteDriver> {
  const driver = await pgliteDriver();
  await driver.db.exec(SUPABASE_ROLES);
  await migrate(pgliteExecutor(driver.db));
  return driver;
}

/** A store on a scratch database (a server's, else PGlite), for benchmarks and one-off runs. */
export interface ScratchStore {
  kind: "postgres" | "pglite";
  /** The database name (postgres) or "pglite". */
  name: string;
  driver: SqlDriver;
  store: Store;
  /** Closes the store; drops the database too with `drop` (else it is left for inspection). */
  close(options: { drop: boolean }): Promise<void>;
}

/** Opens a store on a fresh migrated database on `server`, or on PGlite when it is null. */
export async function openScratchStore(
  label: string,
  server: string | null,
): Promise<ScratchStore> {
  if (!server) {
    const driver = await migratedPglite();
    return {
      kind: "pglite",
      name: "pglite",
      driver,
      store: new Store(driver),
      close: () => driver.close(),
    };
  }
  const scratch = await createScratchDb(server, label);
  const driver = postgresDriver(scratch.url);
  return {
    kind: "postgres",
    name: scratch.name,
    driver,
    store: new Store(driver),
    async close({ drop }) {
      await driver.close();
      if (drop) await scratch.drop();
    },
  };
}
