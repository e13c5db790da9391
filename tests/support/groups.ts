/**
 * The names the store and database tests know dbTests and its helpers by, and a helper
 * for tests that look at the whole database.
 */
import type { TestDb } from "./db.ts";

export {
  dbTests as testGroup,
  type GroupTest,
  openPgliteTestDb,
  SERVER,
  SUPABASE_ROLES,
  type TestOptions,
} from "./db.ts";

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
