/**
 * What only local use needs: the embedded PGlite database, the migration runner, scratch
 * databases (a server's, copied from a migrated template, or PGlite), clocks that tests and
 * local runs move, and the task-file loader. The CLIs, the demo and the tests
 * import it beside mod.ts; the deployed function never does (tests/deploy/graph_test.ts).
 */
export { type PgliteDriver, pgliteDriver } from "./dev/pglite.ts";
export {
  migrate,
  type Migration,
  MIGRATIONS_DIR,
  pgliteExecutor,
  postgresExecutor,
  readMigrations,
  type SqlExecutor,
} from "./dev/migrate.ts";
export {
  createScratchDb,
  databaseUrl,
  findServer,
  LOCAL_SERVER_URL,
  migratedPglite,
  migratedTemplate,
  openScratchStore,
  type ScratchDb,
  type ScratchStore,
  SUPABASE_ROLES,
  templateName,
} from "./dev/scratch_db.ts";
export { FakeClock, VirtualClock } from "./dev/clocks.ts";
export { publishTasks, readTaskFile, type TaskFile, taskPaths } from "./dev/task_files.ts";
export { registerSyncBuild } from "./dev/sync_build.ts";
