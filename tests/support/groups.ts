/**
 * Groups of tests that share one database, like dbTests in db.ts, for files that need more:
 * a PGlite beside the server (the contract suite runs on every driver), tests that only a
 * server can run (several connections), and tests kept ignored until a known bug is fixed.
 * An ignored test is registered outside the group's count, so the database is still closed
 * (and dropped when every test passed) after the last test that runs.
 */
import { findServer, openTestDb, type TestDb } from "./db.ts";
import { migrate } from "../../supabase/functions/quickjs/store/migrate.ts";
import { pgliteDriver } from "../../supabase/functions/quickjs/store/pglite.ts";
import { Store } from "../../supabase/functions/quickjs/store/store.ts";

/** The roles Supabase has before any migration runs (as in db.ts). */
export const SUPABASE_ROLES = `
  do $$ begin
    if not exists (select 1 from pg_roles where rolname = 'anon') then create role anon nologin; end if;
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then create role authenticated nologin; end if;
    if not exists (select 1 from pg_roles where rolname = 'service_role') then create role service_role nologin bypassrls; end if;
  end $$;`;

/** A migrated in-memory PGlite with the Supabase roles, whatever server is around. */
export async function openPgliteTestDb(): Promise<TestDb> {
  const driver = await pgliteDriver();
  const pg = driver.db;
  await pg.exec(SUPABASE_ROLES);
  await migrate({
    exec: async (text) => void await pg.exec(text),
    query: async (text, params) => await pg.query(text, params),
  });
  return {
    kind: "pglite",
    name: "pglite",
    driver,
    store: new Store(driver),
    query: async <T>(text: string, params: unknown[] = []) =>
      (await pg.query(text, params)).rows as T[],
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
  ignore?: string | false;
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
 * Registers tests sharing the database `open` returns (default: openTestDb(label)). The
 * database is opened by the first test that runs, closed after the last, and dropped only
 * if all of them passed; otherwise its name is printed and it is left for inspection.
 */
export function testGroup(
  label: string,
  open: () => Promise<TestDb> = () => openTestDb(label),
): { test: GroupTest; db: () => Promise<TestDb> } {
  let db: Promise<TestDb> | undefined;
  let failed = false;
  let registered = 0;
  let finished = 0;
  const get = () => db ??= open();
  const test: GroupTest = (name, fn, options = {}) => {
    const reason = (options.ignore && !RUN_KNOWN_BUGS ? options.ignore : undefined) ||
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

/**
 * Ends every unfinished run (as cancelled, rows kept for inspection), for tests that claim,
 * tick or list across the whole database and must see only their own runs.
 */
export async function retireOtherRuns(db: TestDb): Promise<void> {
  await db.query(`
    update quickjs.runs set status = 'cancelled', lease_owner = null, lease_expires_at = null,
      wake_at = null, finished_at = coalesce(finished_at, now()), updated_at = now(),
      error = '{"code": "RETIRED", "name": "Retired", "message": "retired by a later test"}'
    where status not in ('completed', 'failed', 'cancelled')`);
}
