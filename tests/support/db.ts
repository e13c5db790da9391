/**
 * A real Postgres for each test file: a fresh database on DATABASE_URL's server, else on a
 * server at 127.0.0.1:5432, else an in-memory PGlite. Migrations are applied as Supabase
 * would (its roles exist first, so the guarded parts run). A database whose tests failed
 * is left in place, and its name printed, so it can be inspected.
 */
import postgres from "postgres";
import { PGlite } from "@electric-sql/pglite";
import {
  postgresDriver,
  type SqlDriver,
  Store,
} from "../../supabase/functions/_shared/quickjs/mod.ts";
import {
  migrate,
  pgliteDriver,
  pgliteExecutor,
  postgresExecutor,
} from "../../supabase/functions/_shared/quickjs/dev.ts";

export interface TestDb {
  /** "postgres" (a server) or "pglite". */
  kind: "postgres" | "pglite";
  /** Connection string of this file's database (postgres only). */
  url?: string;
  /** The database name (postgres) or "pglite". */
  name: string;
  driver: SqlDriver;
  store: Store;
  /** A raw query, for assertions and for setting up odd states. */
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  /** Another driver on its own connection (postgres) or the same instance (pglite). */
  newDriver(): SqlDriver;
  close(options: { drop: boolean }): Promise<void>;
}

const LOCAL_URL = "postgres://postgres@127.0.0.1:5432/postgres";
let serverUrl: Promise<string | null> | undefined;
let announced = false;

/** DATABASE_URL, or the local server if one answers, or null for PGlite. */
export function findServer(): Promise<string | null> {
  return serverUrl ??= (async () => {
    const env = Deno.env.get("DATABASE_URL");
    if (env) return env;
    if (Deno.env.get("QUICKJS_TEST_PGLITE") === "1") return null;
    const sql = postgres(LOCAL_URL, { max: 1, connect_timeout: 2, onnotice: () => {} });
    try {
      await sql`select 1`;
      return LOCAL_URL;
    } catch {
      return null;
    } finally {
      await sql.end({ timeout: 1 }).catch(() => {});
    }
  })();
}

export const SUPABASE_ROLES = `
  do $$ begin
    if not exists (select 1 from pg_roles where rolname = 'anon') then create role anon nologin; end if;
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then create role authenticated nologin; end if;
    if not exists (select 1 from pg_roles where rolname = 'service_role') then create role service_role nologin bypassrls; end if;
  end $$;`;

export async function openTestDb(label: string): Promise<TestDb> {
  const server = await findServer();
  if (!announced) {
    announced = true;
    console.log(
      `[tests] database: ${
        server ? `PostgreSQL server at ${new URL(server).host}` : "PGlite (in memory)"
      }`,
    );
  }
  return server ? await openOnServer(server, label) : await openPgliteTestDb();
}

async function openOnServer(server: string, label: string): Promise<TestDb> {
  const name = `qjs_t_${label.replace(/\W+/g, "_").toLowerCase().slice(0, 30)}_${
    Date.now().toString(36)
  }${Math.floor(Math.random() * 1e4)}`;
  const admin = postgres(server, { max: 1, onnotice: () => {} });
  await admin.unsafe(SUPABASE_ROLES);
  await admin.unsafe(`create database ${name}`);
  await admin.end();
  const url = new URL(server);
  url.pathname = `/${name}`;
  const sql = postgres(url.toString(), { max: 1, onnotice: () => {} });
  await migrate(postgresExecutor(sql));
  const driver = postgresDriver(url.toString());
  const drivers: SqlDriver[] = [driver];
  return {
    kind: "postgres",
    url: url.toString(),
    name,
    driver,
    store: new Store(driver),
    query: async <T>(text: string, params: unknown[] = []) =>
      await sql.unsafe(text, params as never[]) as unknown as T[],
    newDriver() {
      const extra = postgresDriver(url.toString());
      drivers.push(extra);
      return extra;
    },
    async close({ drop }) {
      await Promise.all(drivers.map((d) => d.close()));
      await sql.end();
      if (!drop) {
        console.log(`[tests] left database ${name} in place for inspection: ${url}`);
        return;
      }
      const admin = postgres(server, { max: 1, onnotice: () => {} });
      await admin.unsafe(`drop database if exists ${name} with (force)`);
      await admin.end();
    },
  };
}

/** A migrated in-memory PGlite with the Supabase roles, whatever server is around. */
export async function openPgliteTestDb(): Promise<TestDb> {
  const driver = await pgliteDriver();
  const db: PGlite = driver.db;
  await db.exec(SUPABASE_ROLES);
  await migrate(pgliteExecutor(db));
  return {
    kind: "pglite",
    name: "pglite",
    driver,
    store: new Store(driver),
    query: async <T>(text: string, params: unknown[] = []) =>
      (await db.query(text, params)).rows as T[],
    newDriver: () => ({ ...driver, close: () => Promise.resolve() }),
    close: async () => await driver.close(),
  };
}

/** The server the tests use, or null when they run on PGlite. */
export const SERVER: string | null = await findServer();

/** QUICKJS_TEST_KNOWN_BUGS=1 runs the tests ignored for a known bug (to check a fix). */
const RUN_KNOWN_BUGS = Deno.env.get("QUICKJS_TEST_KNOWN_BUGS") === "1";

export interface TestOptions {
  /** Why the test is not run: a known bug (named in the report) or a missing server. */
  ignore?: string | boolean;
  /**
   * The test needs a PostgreSQL server; ignored on PGlite. A string says why (default: it
   * needs several connections at once).
   */
  serverOnly?: boolean | string;
}

export type GroupTest = (
  name: string,
  fn: (db: TestDb, t: Deno.TestContext) => Promise<void>,
  options?: TestOptions,
) => void;

/**
 * Registers the tests of a file that share one database (default: openTestDb(label)). The
 * database is opened by the first test that runs and closed after the last; it is dropped
 * only if all of them passed, otherwise its name is printed and it is left for inspection.
 * Ignored tests do not count, so they do not keep the database open.
 */
export function dbTests(
  label: string,
  open: () => Promise<TestDb> = () => openTestDb(label),
): { test: GroupTest; db: () => Promise<TestDb> } {
  let db: Promise<TestDb> | undefined;
  let failed = false;
  let registered = 0;
  let finished = 0;
  const get = () => db ??= open();
  const test: GroupTest = (name, fn, options = {}) => {
    const reason = (options.ignore && !RUN_KNOWN_BUGS ? String(options.ignore) : undefined) ||
      (options.serverOnly && !SERVER
        ? typeof options.serverOnly === "string"
          ? options.serverOnly
          : "needs a PostgreSQL server with several connections; PGlite has one"
        : undefined);
    if (reason) {
      console.log(`[tests] not run: "${name}": ${reason}`);
      Deno.test({ name, ignore: true, fn: () => {} });
      return;
    }
    registered++;
    Deno.test({
      name,
      sanitizeOps: false,
      sanitizeResources: false,
      fn: async (t) => {
        try {
          await fn(await get(), t);
        } catch (e) {
          failed = true;
          throw e;
        } finally {
          if (++finished === registered) await (await get()).close({ drop: !failed });
        }
      },
    });
  };
  return { test, db: get };
}
