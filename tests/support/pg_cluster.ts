/**
 * A throwaway PostgreSQL cluster of a test's own (as .ci/run starts one), for tests that
 * crash the database: initdb into a temporary directory as user postgres, a free port from
 * 55500 up, `pg_ctl -m immediate stop` for the fault, removed at the end. The shared server
 * on 5432 is never touched.
 */
import postgres from "postgres";
import {
  postgresDriver,
  type SqlDriver,
  Store,
} from "../../supabase/functions/_shared/quickjs/mod.ts";
import { migrate, postgresExecutor } from "../../supabase/functions/_shared/quickjs/dev.ts";
import { SUPABASE_ROLES, type TestDb } from "./db.ts";

export interface Cluster {
  url: string;
  port: number;
  dir: string;
  /** Crash it (immediate stop: no checkpoint, clients cut off), wait `downMs`, start it. */
  crashAndRestart(downMs: number): Promise<void>;
  /** Stops it and keeps its directory (a failed test's, for inspection). */
  stop(): Promise<void>;
  destroy(): Promise<void>;
}

function pgBin(): string | undefined {
  try {
    const versions = [...Deno.readDirSync("/usr/lib/postgresql")].map((e) => e.name)
      .sort((a, b) => Number(b) - Number(a));
    for (const v of versions) {
      const bin = `/usr/lib/postgresql/${v}/bin`;
      try {
        Deno.statSync(`${bin}/pg_ctl`);
        return bin;
      } catch {
        // not this one
      }
    }
  } catch {
    // no PostgreSQL installed
  }
  return undefined;
}

/** Why a cluster cannot be started here, or undefined when it can. */
export function clusterUnavailable(): string | undefined {
  if (!pgBin()) return "needs PostgreSQL's initdb and pg_ctl (/usr/lib/postgresql/*/bin)";
  if (Deno.build.os === "windows") return "needs a POSIX system to run initdb as postgres";
  try {
    if (Deno.uid() !== 0) return "needs root, to run initdb and pg_ctl as user postgres";
  } catch {
    return "needs root, to run initdb and pg_ctl as user postgres";
  }
  return undefined;
}

async function asPostgres(command: string): Promise<void> {
  const out = await new Deno.Command("su", {
    args: ["postgres", "-c", command],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`${command}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
}

function freePort(): number {
  for (let i = 0; i < 200; i++) {
    const port = 55500 + Math.floor(Math.random() * 400);
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return port;
    } catch {
      // taken
    }
  }
  throw new Error("no free port in 55500-55899");
}

/** Whether this machine's PostgreSQL has pg_cron (postgresql-<version>-cron). */
export function hasPgCron(): boolean {
  const bin = pgBin();
  if (!bin) return false;
  try {
    Deno.statSync(`${bin}/../lib/pg_cron.so`);
    return true;
  } catch {
    return false;
  }
}

/** `settings`: extra server settings, e.g. `{ shared_preload_libraries: "pg_cron" }`. */
export async function startCluster(
  options: { settings?: Record<string, string> } = {},
): Promise<Cluster> {
  const bin = pgBin()!;
  const dir = await Deno.makeTempDir({ prefix: "quickjs-reliability-pg-" });
  await Deno.chown(dir, Number(await id("postgres", "-u")), Number(await id("postgres", "-g")));
  const port = freePort();
  const extra = Object.entries(options.settings ?? {}).map(([k, v]) => ` -c ${k}=${v}`).join("");
  const ctl = (args: string) => asPostgres(`${bin}/pg_ctl -D ${dir} ${args}`);
  // fsync off: the fault is a process crash, not a power cut; the OS keeps what was written
  const start = () =>
    ctl(
      `-l ${dir}/server.log -w -t 60 -o '-p ${port} -k /tmp -c listen_addresses=127.0.0.1 ` +
        `-c max_connections=100 -c fsync=off${extra}' start`,
    );
  await asPostgres(`${bin}/initdb -D ${dir} -A trust -U postgres`);
  await start();
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    dir,
    async crashAndRestart(downMs) {
      await ctl("-m immediate stop");
      await new Promise((r) => setTimeout(r, downMs));
      await start();
    },
    async stop() {
      await ctl("-m immediate stop").catch(() => {});
    },
    async destroy() {
      await ctl("-m immediate stop").catch(() => {});
      await Deno.remove(dir, { recursive: true });
    },
  };
}

async function id(user: string, flag: string): Promise<string> {
  const out = await new Deno.Command("id", { args: [flag, user], stdout: "piped" }).output();
  return new TextDecoder().decode(out.stdout).trim();
}

/** A migrated database on the cluster, shaped as the other tests' TestDb. */
export async function openClusterDb(cluster: Cluster, name = "reliability"): Promise<TestDb> {
  const admin = postgres(cluster.url, { max: 1, onnotice: () => {} });
  await admin.unsafe(SUPABASE_ROLES);
  await admin.unsafe(`create database ${name}`);
  await admin.end();
  const url = new URL(cluster.url);
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
    async close() {
      await Promise.all(drivers.map((d) => d.close().catch(() => {})));
      await sql.end({ timeout: 1 }).catch(() => {});
    },
  };
}
