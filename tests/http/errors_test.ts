/** errorResponse: the one place that turns an error into an HTTP answer. */
import assert from "node:assert/strict";
import { errorResponse, HttpError } from "../../supabase/functions/quickjs/http/errors.ts";
import { StoreError } from "../../supabase/functions/_shared/quickjs/mod.ts";

async function mapped(e: unknown) {
  const response = errorResponse(e);
  assert.equal(response.headers.get("content-type"), "application/json");
  return { status: response.status, headers: response.headers, body: await response.json() };
}

/** Runs fn with console.error captured. */
async function quietly<T>(fn: () => Promise<T>): Promise<{ value: T; logged: unknown[][] }> {
  const logged: unknown[][] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => void logged.push(args);
  try {
    return { value: await fn(), logged };
  } finally {
    console.error = original;
  }
}

Deno.test("an HttpError is answered as it is, with its headers", async () => {
  const res = await mapped(
    new HttpError(405, "METHOD_NOT_ALLOWED", "use POST", { headers: { allow: "POST" } }),
  );
  assert.equal(res.status, 405);
  assert.equal(res.headers.get("allow"), "POST");
  assert.deepEqual(res.body, { error: { code: "METHOD_NOT_ALLOWED", message: "use POST" } });
});

Deno.test("a 401 names the Bearer scheme", async () => {
  const res = await mapped(new HttpError(401, "UNAUTHENTICATED", "who are you"));
  assert.equal(res.headers.get("www-authenticate"), "Bearer");
});

Deno.test("store errors keep their code, with the status the code list gives it", async () => {
  const notFound = await mapped(new StoreError("TASK_NOT_FOUND", "task x does not exist"));
  assert.equal(notFound.status, 404);
  assert.deepEqual(notFound.body.error, {
    code: "TASK_NOT_FOUND",
    message: "task x does not exist",
  });
  const conflict = await mapped(new StoreError("IDEMPOTENCY_CONFLICT", "key reused"));
  assert.equal(conflict.status, 409);
  assert.equal(conflict.body.error.code, "IDEMPOTENCY_CONFLICT");
  const refused = await mapped(new StoreError("NOT_PARKED", "nothing parked"));
  assert.equal(refused.status, 422);
  assert.equal(refused.body.error.code, "NOT_PARKED");
});

Deno.test("a database error is a 500 INTERNAL that leaks nothing but is logged", async () => {
  const secret = "password authentication failed for user postgres at 10.0.0.5";
  const { value: res, logged } = await quietly(() =>
    mapped(new StoreError("DATABASE_ERROR", secret))
  );
  assert.equal(res.status, 500);
  assert.equal(res.body.error.code, "INTERNAL");
  assert.ok(!JSON.stringify(res.body).includes("10.0.0.5"));
  assert.equal(logged.length, 1);
  assert.ok(logged[0]!.some((arg) => arg instanceof StoreError && arg.message === secret));
});

Deno.test("any other error is a 500 INTERNAL with a generic message", async () => {
  for (const e of [new TypeError("x is undefined at /srv/app.ts:12"), "a string", undefined]) {
    const { value: res, logged } = await quietly(() => mapped(e));
    assert.equal(res.status, 500);
    assert.equal(res.body.error.code, "INTERNAL");
    assert.ok(!res.body.error.message.includes("/srv/app.ts"));
    assert.equal(logged.length, 1);
  }
});
