/**
 * Authentication of the HTTP app: service keys (legacy service role key, SUPABASE_SECRET_KEYS),
 * HS256 JWTs and asymmetric ones with a JWKS (from the env or the project's endpoint).
 */
import assert from "node:assert/strict";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { type AuthConfig, createApp } from "../../supabase/functions/quickjs/http/app.ts";
import { authFromEnv } from "../../supabase/functions/quickjs/http/setup.ts";
import { Engine, ToolRegistry } from "../../supabase/functions/_shared/quickjs/mod.ts";
import { dbTests, type TestDb } from "../support/db.ts";

/** A response body as JSON, read field by field in assertions. */
// deno-lint-ignore no-explicit-any
type Body = any;

const { test } = dbTests("http auth");

const SERVICE_KEY = "auth-test-service-role-key";
const JWT_SECRET = "auth-test-jwt-secret-of-at-least-32-characters";

function appFor(
  db: TestDb,
  auth: AuthConfig = { serviceRoleKey: SERVICE_KEY, jwtSecret: JWT_SECRET },
) {
  const engine = new Engine({
    store: db.store,
    tools: new ToolRegistry(db.store),
    workerId: "auth-test",
  });
  return createApp({ store: db.store, engine, auth });
}

/** GET of a run that does not exist: 404 once the caller is let in. */
async function getMissingRun(
  app: (r: Request) => Promise<Response>,
  authorization?: string,
): Promise<{ status: number; headers: Headers; body: Body }> {
  const headers = new Headers();
  if (authorization !== undefined) headers.set("authorization", authorization);
  const response = await app(
    new Request(`http://localhost/quickjs/runs/${crypto.randomUUID()}`, { headers }),
  );
  return { status: response.status, headers: response.headers, body: await response.json() };
}

function hs256(claims: Record<string, unknown>, options: {
  sub?: string;
  secret?: string;
  expiresAt?: number | string;
} = {}): Promise<string> {
  const jwt = new SignJWT(claims)
    .setProtectedHeader({ alg: "HS256" })
    .setIssuedAt()
    .setExpirationTime(options.expiresAt ?? "1h");
  if (options.sub) jwt.setSubject(options.sub);
  return jwt.sign(new TextEncoder().encode(options.secret ?? JWT_SECRET));
}

test("a request without Authorization is 401 UNAUTHENTICATED", async (db) => {
  const app = appFor(db);
  const res = await getMissingRun(app);
  assert.equal(res.status, 401);
  assert.equal(res.body.error.code, "UNAUTHENTICATED");
  assert.equal(res.headers.get("www-authenticate"), "Bearer");
  const basic = await getMissingRun(app, `Basic ${btoa("user:pass")}`);
  assert.equal(basic.status, 401);
  assert.equal(basic.body.error.code, "UNAUTHENTICATED");
});

test("the service role key lets the caller in; a key that differs at all does not", async (db) => {
  const app = appFor(db);
  assert.equal((await getMissingRun(app, `Bearer ${SERVICE_KEY}`)).status, 404);
  assert.equal((await getMissingRun(app, `bearer ${SERVICE_KEY}`)).status, 404);
  for (const wrong of [SERVICE_KEY.slice(0, -1), `${SERVICE_KEY}x`, "nonsense"]) {
    const res = await getMissingRun(app, `Bearer ${wrong}`);
    assert.equal(res.status, 401, wrong);
    assert.equal(res.body.error.code, "INVALID_TOKEN");
  }
});

test("a JWT signed with another secret is 401 INVALID_TOKEN", async (db) => {
  const app = appFor(db);
  const token = await hs256({ role: "authenticated" }, {
    sub: crypto.randomUUID(),
    secret: "some-other-secret-of-at-least-32-characters",
  });
  const res = await getMissingRun(app, `Bearer ${token}`);
  assert.equal(res.status, 401);
  assert.equal(res.body.error.code, "INVALID_TOKEN");
  assert.match(res.body.error.message, /signature/);
});

test("an expired JWT is 401 INVALID_TOKEN", async (db) => {
  const app = appFor(db);
  const token = await hs256({ role: "authenticated" }, {
    sub: crypto.randomUUID(),
    expiresAt: Math.floor(Date.now() / 1000) - 60,
  });
  const res = await getMissingRun(app, `Bearer ${token}`);
  assert.equal(res.status, 401);
  assert.equal(res.body.error.code, "INVALID_TOKEN");
  assert.match(res.body.error.message, /expired/);
});

test("a JWT without an expiry or without a user id is 401 INVALID_TOKEN", async (db) => {
  const app = appFor(db);
  const forever = await new SignJWT({ role: "authenticated" })
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(crypto.randomUUID())
    .sign(new TextEncoder().encode(JWT_SECRET));
  const anonymous = await hs256({ role: "anon" });
  const notUuid = await hs256({ role: "authenticated" }, { sub: "alice" });
  for (const token of [forever, anonymous, notUuid]) {
    const res = await getMissingRun(app, `Bearer ${token}`);
    assert.equal(res.status, 401);
    assert.equal(res.body.error.code, "INVALID_TOKEN");
  }
});

test("a user JWT signed with the project's secret is let in", async (db) => {
  const app = appFor(db);
  const token = await hs256({ role: "authenticated" }, { sub: crypto.randomUUID() });
  const res = await getMissingRun(app, `Bearer ${token}`);
  assert.equal(res.status, 404);
  assert.equal(res.body.error.code, "RUN_NOT_FOUND");
});

test("a JWT whose role is service_role may call the service-only routes", async (db) => {
  const app = appFor(db, { jwtSecret: JWT_SECRET });
  const service = await hs256({ role: "service_role" });
  const tick = await app(
    new Request("http://localhost/quickjs/tick", {
      method: "POST",
      headers: { authorization: `Bearer ${service}` },
      body: JSON.stringify({ limit: 1 }),
    }),
  );
  assert.equal(tick.status, 200);
  assert.deepEqual(Object.keys(await tick.json()).sort(), ["invocations", "tick"]);

  const user = await hs256({ role: "authenticated" }, { sub: crypto.randomUUID() });
  const refused = await app(
    new Request("http://localhost/quickjs/tick", {
      method: "POST",
      headers: { authorization: `Bearer ${user}` },
    }),
  );
  assert.equal(refused.status, 403);
  assert.equal((await refused.json()).error.code, "FORBIDDEN");
});

test("a JWT signed with a key from the JWKS is accepted; one from another key is not", async (db) => {
  const { privateKey, publicKey } = await generateKeyPair("ES256");
  const stranger = await generateKeyPair("ES256");
  const jwk = { ...await exportJWK(publicKey), kid: "test-key", alg: "ES256", use: "sig" };
  let fetched = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => {
    fetched++;
    return Response.json({ keys: [jwk] });
  });
  try {
    const app = appFor(db, { jwksUrl: `http://127.0.0.1:${server.addr.port}/jwks.json` });
    const sign = (key: CryptoKey) =>
      new SignJWT({ role: "authenticated" })
        .setProtectedHeader({ alg: "ES256", kid: "test-key" })
        .setSubject(crypto.randomUUID())
        .setExpirationTime("1h")
        .sign(key);

    const good = await getMissingRun(app, `Bearer ${await sign(privateKey)}`);
    assert.equal(good.status, 404);
    assert.equal(good.body.error.code, "RUN_NOT_FOUND");
    assert.ok(fetched >= 1);

    const bad = await getMissingRun(app, `Bearer ${await sign(stranger.privateKey)}`);
    assert.equal(bad.status, 401);
    assert.equal(bad.body.error.code, "INVALID_TOKEN");

    // with only a JWKS configured, HS256 tokens cannot be verified and are refused
    const hs = await hs256({ role: "service_role" });
    const res = await getMissingRun(app, `Bearer ${hs}`);
    assert.equal(res.status, 401);
    assert.equal(res.body.error.code, "INVALID_TOKEN");
  } finally {
    await server.shutdown();
  }
});

// ---- what a hosted project provides (http/setup.ts authFromEnv) ---------------------------

function envOf(values: Record<string, string>) {
  return { get: (name: string) => values[name] };
}

async function signWith(key: CryptoKey, alg: string, kid: string, claims = {}) {
  return await new SignJWT({ role: "authenticated", ...claims })
    .setProtectedHeader({ alg, kid })
    .setSubject(crypto.randomUUID())
    .setExpirationTime("1h")
    .sign(key);
}

test("a secret key from SUPABASE_SECRET_KEYS lets a service caller in by apikey or as the bearer", async (db) => {
  const secret = "sb_secret_0123456789abcdefghij";
  const other = "sb_secret_rotated_zyxwvutsrqpo";
  const auth = authFromEnv(envOf({
    SUPABASE_SECRET_KEYS: JSON.stringify({ default: secret, rotated: other }),
  }));
  const app = appFor(db, auth);
  const call = (headers: Record<string, string>) =>
    app(new Request(`http://localhost/quickjs/tick`, { method: "POST", headers }));
  assert.equal((await call({ apikey: secret })).status, 200);
  assert.equal((await call({ apikey: other })).status, 200);
  assert.equal((await call({ authorization: `Bearer ${secret}` })).status, 200);
  const wrong = await call({ apikey: `${secret}x` });
  assert.equal(wrong.status, 401);
  assert.equal((await wrong.json()).error.code, "UNAUTHENTICATED");
  const badBearer = await call({ authorization: `Bearer ${secret.slice(0, -1)}` });
  assert.equal(badBearer.status, 401);
  assert.equal((await badBearer.json()).error.code, "INVALID_TOKEN");
});

test("the legacy SUPABASE_SERVICE_ROLE_KEY still lets a service caller in", async (db) => {
  const app = appFor(db, authFromEnv(envOf({ SUPABASE_SERVICE_ROLE_KEY: SERVICE_KEY })));
  const tick = (headers: Record<string, string>) =>
    app(new Request(`http://localhost/quickjs/tick`, { method: "POST", headers }));
  assert.equal((await tick({ authorization: `Bearer ${SERVICE_KEY}` })).status, 200);
  assert.equal((await tick({ apikey: SERVICE_KEY })).status, 200);
});

test("user tokens signed with ES256 or RS256 are verified with SUPABASE_JWKS, without a request", async (db) => {
  const es = await generateKeyPair("ES256");
  const rs = await generateKeyPair("RS256");
  const stranger = await generateKeyPair("ES256");
  const jwks = {
    keys: [
      { ...await exportJWK(es.publicKey), kid: "es", alg: "ES256", use: "sig" },
      { ...await exportJWK(rs.publicKey), kid: "rs", alg: "RS256", use: "sig" },
    ],
  };
  // SUPABASE_URL points nowhere: a request to it would fail the test
  const auth = authFromEnv(envOf({
    SUPABASE_JWKS: JSON.stringify(jwks),
    SUPABASE_URL: "http://127.0.0.1:9",
  }));
  const app = appFor(db, auth);
  for (
    const token of [
      await signWith(es.privateKey, "ES256", "es"),
      await signWith(rs.privateKey, "RS256", "rs"),
    ]
  ) {
    const res = await getMissingRun(app, `Bearer ${token}`);
    assert.equal(res.status, 404, JSON.stringify(res.body));
    assert.equal(res.body.error.code, "RUN_NOT_FOUND");
  }
  // a user may not call service routes; the publishable key in apikey changes nothing
  const user = await signWith(es.privateKey, "ES256", "es");
  const tick = await app(
    new Request("http://localhost/quickjs/tick", {
      method: "POST",
      headers: { authorization: `Bearer ${user}`, apikey: "sb_publishable_abc" },
    }),
  );
  assert.equal(tick.status, 403);
  const forged = await getMissingRun(
    app,
    `Bearer ${await signWith(stranger.privateKey, "ES256", "es")}`,
  );
  assert.equal(forged.status, 401);
  assert.equal(forged.body.error.code, "INVALID_TOKEN");
  // and without a JWT secret, HS256 tokens are refused
  const hs = await getMissingRun(app, `Bearer ${await hs256({ role: "service_role" })}`);
  assert.equal(hs.status, 401);
});

test("without SUPABASE_JWKS, keys come from the project's endpoint under SUPABASE_URL; a key the env lacks too", async (db) => {
  const old = await generateKeyPair("ES256");
  const rotated = await generateKeyPair("RS256");
  const served = {
    keys: [
      { ...await exportJWK(old.publicKey), kid: "old", alg: "ES256", use: "sig" },
      { ...await exportJWK(rotated.publicKey), kid: "new", alg: "RS256", use: "sig" },
    ],
  };
  const paths: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    paths.push(new URL(req.url).pathname);
    return Response.json(served);
  });
  try {
    const project = `http://127.0.0.1:${server.addr.port}`;
    const fromUrl = appFor(db, authFromEnv(envOf({ SUPABASE_URL: project })));
    const token = await signWith(old.privateKey, "ES256", "old");
    assert.equal((await getMissingRun(fromUrl, `Bearer ${token}`)).status, 404);
    assert.deepEqual([...new Set(paths)], ["/auth/v1/.well-known/jwks.json"]);

    // the env's JWKS has only the old key; a token signed with the new one is looked up
    const envJwks = { keys: [served.keys[0]] };
    const both = appFor(
      db,
      authFromEnv(envOf({ SUPABASE_URL: project, SUPABASE_JWKS: JSON.stringify(envJwks) })),
    );
    paths.length = 0;
    assert.equal((await getMissingRun(both, `Bearer ${token}`)).status, 404);
    assert.deepEqual(paths, [], "a key in SUPABASE_JWKS needs no request");
    const fresh = await signWith(rotated.privateKey, "RS256", "new");
    assert.equal((await getMissingRun(both, `Bearer ${fresh}`)).status, 404);
    assert.equal(paths.length, 1);
  } finally {
    await server.shutdown();
  }
});

test("an HS256 secret can still be set, under QUICKJS_JWT_SECRET (SUPABASE_ names are reserved)", async (db) => {
  const app = appFor(db, authFromEnv(envOf({ QUICKJS_JWT_SECRET: JWT_SECRET })));
  const token = await hs256({ role: "authenticated" }, { sub: crypto.randomUUID() });
  assert.equal((await getMissingRun(app, `Bearer ${token}`)).status, 404);
});

Deno.test("SUPABASE_SECRET_KEYS and SUPABASE_JWKS that are not what the platform gives are refused clearly", () => {
  assert.throws(
    () => authFromEnv(envOf({ SUPABASE_SECRET_KEYS: "sb_secret_x" })),
    /SUPABASE_SECRET_KEYS/,
  );
  assert.throws(() => authFromEnv(envOf({ SUPABASE_JWKS: "{}" })), /SUPABASE_JWKS/);
  assert.deepEqual(
    authFromEnv(envOf({ SUPABASE_SECRET_KEYS: '{"a":"k1","b":"k2"}' })).serviceKeys,
    [
      "k1",
      "k2",
    ],
  );
});
