/**
 * Opens the store a CLI was pointed at: `--db postgres://…` (a server), `--db pglite` (in
 * memory) or `--db pglite:<dir>` (a data directory), defaulting to DATABASE_URL or
 * SUPABASE_DB_URL and then to an in-memory PGlite. Applies the migrations. `poolMax`: the
 * connections a server's pool may open (default: the driver's 4).
 *
 * It imports the modules it needs, not mod.ts and dev.ts, and PGlite only when asked for:
 * supabase-js, PGlite and the sync build were 8 MB of the worker's RSS, never used
 * (tests/deploy/graph_test.ts).
 */
import postgres from "postgres";
import { Store } from "../../supabase/functions/_shared/quickjs/store/store.ts";
import { postgresDriver } from "../../supabase/functions/_shared/quickjs/store/postgres.ts";
import {
  migrate,
  pgliteExecutor,
  postgresExecutor,
} from "../../supabase/functions/_shared/quickjs/dev/migrate.ts";

export function defaultDb(): string {
  return Deno.env.get("DATABASE_URL") ?? Deno.env.get("SUPABASE_DB_URL") ?? "pglite";
}

export async function openStore(
  db: string = defaultDb(),
  options: { migrate?: boolean; poolMax?: number } = {},
): Promise<Store> {
  const apply = options.migrate ?? true;
  if (db === "pglite" || db.startsWith("pglite:")) {
    const dataDir = db.startsWith("pglite:") ? db.slice("pglite:".length) : undefined;
    const { pgliteDriver } = await import("../../supabase/functions/_shared/quickjs/dev/pglite.ts");
    const driver = await pgliteDriver(dataDir ? { dataDir } : {});
    if (apply) {
      await migrate(pgliteExecutor(driver.db));
    }
    return new Store(driver);
  }
  const pool = options.poolMax !== undefined ? { max: options.poolMax } : {};
  if (!apply) return new Store(postgresDriver(db, pool));
  const admin = postgres(db, { max: 1, onnotice: () => {} });
  try {
    await migrate(postgresExecutor(admin));
  } finally {
    await admin.end();
  }
  return new Store(postgresDriver(db, pool));
}
