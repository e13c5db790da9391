/** The function's database from the environment (http/setup.ts): pooler first, a small pool. */
import assert from "node:assert/strict";
import {
  databaseUrlFromEnv,
  driverFromEnv,
  EDGE_POOL,
} from "../../supabase/functions/quickjs/http/setup.ts";

const envOf = (values: Record<string, string>) => ({ get: (name: string) => values[name] });

Deno.test("QUICKJS_DB_POOLER_URL comes before SUPABASE_DB_URL, which comes before DATABASE_URL", async () => {
  const pooler = "postgres://postgres.ref:pw@aws-0-eu.pooler.supabase.com:6543/postgres";
  const direct = "postgres://postgres:pw@db.ref.supabase.co:5432/postgres";
  assert.equal(
    databaseUrlFromEnv(envOf({ QUICKJS_DB_POOLER_URL: pooler, SUPABASE_DB_URL: direct })),
    pooler,
  );
  assert.equal(databaseUrlFromEnv(envOf({ SUPABASE_DB_URL: direct, DATABASE_URL: "x" })), direct);
  assert.equal(databaseUrlFromEnv(envOf({ QUICKJS_DB_POOLER_URL: "", DATABASE_URL: "x" })), "x");
  const driver = driverFromEnv(envOf({ QUICKJS_DB_POOLER_URL: pooler, SUPABASE_DB_URL: direct }));
  try {
    assert.equal(driver?.kind, "postgres");
    assert.match(driver!.description, /pooler\.supabase\.com:6543/);
    assert.doesNotMatch(driver!.description, /pw/);
  } finally {
    await driver?.close(); // never connected
  }
});

Deno.test("the function's pool is small, closes idle connections and prepares no statements", () => {
  assert.ok(EDGE_POOL.max <= 4);
  assert.ok(EDGE_POOL.idleTimeout > 0 && EDGE_POOL.idleTimeout <= 60);
  assert.equal(EDGE_POOL.prepare, false);
});

Deno.test("without a database URL, SUPABASE_URL and a key from SUPABASE_SECRET_KEYS name the REST driver", () => {
  const driver = driverFromEnv(envOf({
    SUPABASE_URL: "http://127.0.0.1:9",
    SUPABASE_SECRET_KEYS: JSON.stringify({ default: "sb_secret_abc" }),
  }));
  assert.equal(driver?.kind, "supabase");
  assert.equal(driverFromEnv(envOf({ SUPABASE_URL: "http://127.0.0.1:9" })), undefined);
});
