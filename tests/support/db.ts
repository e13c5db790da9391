/**
 * A real Postgres for each test file: a fresh database on DATABASE_URL's server, else on a
 * server at 127.0.0.1:5432, else an in-memory PGlite. On a server each file's database is a
 * copy of a template migrated once per set of migrations (dev/scratch_db.ts), as Supabase
 * would migrate it (its roles exist first, so the guarded parts run). A database whose tests
 * failed is left in place, and its name printed, so it can be inspected.
 */
import postgres from "postgres";
import {
  postgresDriver,
  type SqlDriver,
  Store,
} from "../../supabase/functions/_shared/quickjs/mod.ts";
import {
  createScratchDb,
  findServer as findAnyServer,
  migratedPglite,
  SUPABASE_ROLES,
} from "../../supabase/functions/_shared/quickjs/dev.ts";

export { SUPABASE_ROLES };

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
  /** Closes this test's connections (the database stays; see TestDbFile.finish). */
  close(): Promise<void>;
}

/**
 * A test file's database. Each test gets its own connections to it (`connect`, closed when
 * the test ends), so nothing a test opened outlives it and Deno's leak sanitizers can be on.
 */
export interface TestDbFile {
  connect(): Promise<TestDb>;
  /** After the file's last test: drops the database, or leaves it and prints its name. */
  finish(options: { drop: boolean }): Promise<void>;
}

let serverUrl: Promise<string | null> | undefined;
let announced = false;

/** DATABASE_URL, or the local server if one answers, or null for PGlite (QUICKJS_TEST_PGLITE=1). */
export function findServer(): Promise<string | null> {
  return serverUrl ??= findAnyServer({
    url: Deno.env.get("DATABASE_URL"),
    pglite: Deno.env.get("QUICKJS_TEST_PGLITE") === "1",
  });
}

/** This file's database: a copy of the migrated template on the server, else a PGlite. */
export async function openTestDb(label: string): Promise<TestDbFile> {
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

/** A copy of the migrated template on `server`, or an empty database with `migrated: false`. */
export async function openOnServer(
  server: string,
  label: string,
  options: { migrated?: boolean } = {},
): Promise<TestDbFile> {
  const scratch = await createScratchDb(server, label, options);
  const { name, url } = scratch;
  return {
    connect: () => {
      const sql = postgres(url, { max: 1, onnotice: () => {} });
      const driver = postgresDriver(url);
      const drivers: SqlDriver[] = [driver];
      return Promise.resolve({
        kind: "postgres",
        url,
        name,
        driver,
        store: new Store(driver),
        query: async <T>(text: string, params: unknown[] = []) =>
          await sql.unsafe(text, params as never[]) as unknown as T[],
        newDriver() {
          const extra = postgresDriver(url);
          drivers.push(extra);
          return extra;
        },
        async close() {
          await Promise.all(drivers.map((d) => d.close()));
          await sql.end();
        },
      });
    },
    async finish({ drop }) {
      if (!drop) {
        console.log(`[tests] left database ${name} in place for inspection: ${url}`);
        return;
      }
      await scratch.drop();
    },
  };
}

/** A migrated in-memory PGlite with the Supabase roles, whatever server is around. */
export async function openPgliteTestDb(): Promise<TestDbFile> {
  const driver = await migratedPglite();
  const db = driver.db;
  const shared = { ...driver, close: () => Promise.resolve() };
  return {
    connect: () =>
      Promise.resolve({
        kind: "pglite",
        name: "pglite",
        driver: shared,
        store: new Store(shared),
        query: async <T>(text: string, params: unknown[] = []) =>
          (await db.query(text, params)).rows as T[],
        newDriver: () => shared,
        close: () => Promise.resolve(),
      }),
    finish: () => driver.close(),
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
  /**
   * false (with the reason as a string) turns Deno's op and resource sanitizers off for a
   * test that cannot end with everything it started finished, such as one that leaves a
   * subprocess's pipes to the runtime.
   */
  sanitize?: boolean | string;
}

export type GroupTest = (
  name: string,
  fn: (db: TestDb, t: Deno.TestContext) => Promise<void>,
  options?: TestOptions,
) => void;

/**
 * Registers the tests of a file that share one database (default: openTestDb(label)). The
 * database is made by the first test that runs and finished after the last; it is dropped
 * only if all of them passed, otherwise its name is printed and it is left for inspection.
 * Each test has connections of its own, closed when it ends, and runs with Deno's op and
 * resource sanitizers on unless `sanitize: false` says why not. Ignored tests do not count,
 * so they do not keep the database open.
 */
export function dbTests(
  label: string,
  open: () => Promise<TestDbFile> = () => openTestDb(label),
): { test: GroupTest } {
  // PGlite runs Postgres's own timeouts (lock and statement timers, setitimer) as JavaScript
  // timers that one query starts and a later one clears: they outlive the test that started
  // them, and Deno counts timers under both sanitizers, so neither can be on for a PGlite
  // database. On a server every test opens and closes its own connections, and both are on.
  const pglite = open === openPgliteTestDb || !SERVER;
  let file: Promise<TestDbFile> | undefined;
  let failed = false;
  let registered = 0;
  let finished = 0;
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
    const sanitize = typeof options.sanitize === "string" ? false : options.sanitize ?? true;
    Deno.test({
      name,
      sanitizeOps: sanitize && !pglite,
      sanitizeResources: sanitize && !pglite,
      fn: async (t) => {
        try {
          const db = await (await (file ??= open())).connect();
          try {
            await fn(db, t);
          } finally {
            await db.close();
          }
        } catch (e) {
          failed = true;
          throw e;
        } finally {
          if (++finished === registered) await (await file!).finish({ drop: !failed });
        }
      },
    });
  };
  return { test };
}
