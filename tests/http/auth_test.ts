/** Authentication of the HTTP app: the service role key, HS256 JWTs and a JWKS. */
import assert from "node:assert/strict";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { type AuthConfig, createApp } from "../../supabase/functions/quickjs/http/app.ts";
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
