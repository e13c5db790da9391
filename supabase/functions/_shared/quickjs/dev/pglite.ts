/**
 * Store driver over PGlite: real Postgres compiled to wasm, in memory or in a data
 * directory. The embedded default for the demo, the local runner and tests without a
 * server. One connection; PGlite runs one query at a time.
 */
import { PGlite } from "@electric-sql/pglite";
import {
  type Operation,
  type OperationArgs,
  type OperationResult,
  sqlCall,
  sqlResult,
} from "../store/operations.ts";
import type { SqlDriver } from "../store/store.ts";

export interface PgliteDriver extends SqlDriver {
  readonly db: PGlite;
}

export async function pgliteDriver(options: { dataDir?: string } = {}): Promise<PgliteDriver> {
  const db = options.dataDir ? await PGlite.create(options.dataDir) : await PGlite.create();
  return {
    kind: "pglite",
    description: options.dataDir ? `data directory ${options.dataDir}` : "in memory",
    db,
    async call<Op extends Operation>(
      op: Op,
      args: OperationArgs<Op>,
    ): Promise<OperationResult<Op>> {
      // PGlite reads a jsonb parameter as JSON text
      const { text, params } = sqlCall(
        op,
        args,
        (type, value) => type === "jsonb" || type === "text[]" ? JSON.stringify(value) : value,
      );
      const result = await db.query<Record<string, unknown>>(text, params);
      // bytea arrives as a Uint8Array
      return sqlResult(op, result.rows, (value) => value as Uint8Array);
    },
    async listen(channel, onNotify) {
      return await db.listen(channel, onNotify);
    },
    close: () => db.close(),
  };
}
