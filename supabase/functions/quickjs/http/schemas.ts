/** zod schemas for every request body and path parameter, and the one way to apply them. */
import { z } from "zod";
import { type ErrorCode, isErrorCode, type Json, storable } from "../../_shared/quickjs/mod.ts";
import { HttpError } from "./errors.ts";

/**
 * Text Postgres can hold: no U+0000 (text refuses it) and no lone surrogate (jsonb refuses
 * it, and text would store U+FFFD instead). Refused here, before any database round trip.
 */
const storableString = () =>
  z.string().refine(storable, { error: "must not contain U+0000 or a lone surrogate" });

/**
 * A run's input: any JSON the body held (JSON.parse made it, so no type check is needed),
 * kept as it is (z.json() rebuilds objects and silently drops a "__proto__" key). Strings
 * Postgres cannot store fail with the code VALUE_NOT_STORABLE; numbers past a double's
 * range (JSON.parse reads 1e400 as Infinity, which would be stored as null) are invalid.
 */
const jsonInput = z.custom<Json>(() => true).superRefine((value, ctx) => {
  const problem = inputProblem(value);
  if (!problem) return;
  ctx.addIssue({
    code: "custom",
    message: problem.message,
    path: problem.path,
    ...(problem.code ? { params: { code: problem.code } } : {}),
  });
});

/** The first string Postgres cannot hold, or number out of range, walked without recursion. */
function inputProblem(
  value: unknown,
): { path: (string | number)[]; message: string; code?: string } | undefined {
  const stack: [unknown, (string | number)[]][] = [[value, []]];
  while (stack.length) {
    const [item, path] = stack.pop()!;
    if (typeof item === "string") {
      if (!storable(item)) {
        return {
          path,
          code: "VALUE_NOT_STORABLE",
          message: "holds U+0000 or a lone surrogate, which Postgres cannot store; " +
            "encode it first, e.g. with encodeURIComponent",
        };
      }
    } else if (typeof item === "number") {
      if (!Number.isFinite(item)) return { path, message: "a number out of range" };
    } else if (Array.isArray(item)) {
      for (let i = item.length - 1; i >= 0; i--) stack.push([item[i], [...path, i]]);
    } else if (item !== null && typeof item === "object") {
      for (const [key, child] of Object.entries(item).reverse()) {
        if (!storable(key)) {
          return {
            path: [...path, key],
            code: "VALUE_NOT_STORABLE",
            message: "a key holds U+0000 or a lone surrogate, which Postgres cannot store",
          };
        }
        stack.push([child, [...path, key]]);
      }
    }
  }
  return undefined;
}

/** Path parameters: run ids are uuids (Postgres would refuse anything else with a 500). */
export const runParams = z.strictObject({ id: z.guid("must be a uuid") });

/** POST /runs. `wait` is capped by the app's maxWaitMs, so the schema is built per app. */
export function startRunBody(maxWaitMs: number) {
  return z.strictObject({
    task: storableString().min(1).max(200).optional(),
    taskId: z.guid("must be a uuid").optional(),
    input: jsonInput.optional(),
    idempotencyKey: storableString().min(1).max(200).optional(),
    wait: z.int().min(0).max(maxWaitMs).optional(),
  }, { error: (issue) => issue.input === undefined ? "a JSON object is required" : undefined })
    .refine((body) => body.task === undefined || body.taskId === undefined, {
      error: "give task or taskId, not both",
      path: ["task"],
    }).refine((body) => body.task !== undefined || body.taskId !== undefined, {
      error: "task or taskId is required",
      path: ["task"],
    });
}

/** POST /runs/:id/calls/:seq/complete and …/heartbeat: the path. */
export const callParams = z.strictObject({
  id: z.guid("must be a uuid"),
  seq: z.coerce.number().int().min(1).max(2 ** 31 - 1),
});

/**
 * POST /runs/:id/calls/:seq/complete: the token the call was sent with, and its `result`
 * or its `error` ({code, message, data}), not both.
 */
export const completeCallBody = z.strictObject({
  token: z.string().min(1).max(200),
  result: jsonInput.optional(),
  error: z.strictObject({
    code: z.string().regex(/^[A-Za-z][A-Za-z0-9_.-]{0,63}$/, "must be a short code").optional(),
    message: storableString().max(10_000).optional(),
    data: jsonInput.optional(),
  }).optional(),
}).refine((body) => body.result === undefined || body.error === undefined, {
  error: "give result or error, not both",
  path: ["error"],
});

/** The most progress a heartbeat may report, as JSON text: it is kept with the call. */
export const MAX_HEARTBEAT_DETAILS_BYTES = 64 * 1024;

/**
 * POST /runs/:id/calls/:seq/heartbeat: the token the call was sent with, and optional
 * progress (`details`), which a re-sent call carries back to the service.
 */
export const heartbeatCallBody = z.strictObject({
  token: z.string().min(1).max(200),
  details: jsonInput.optional(),
}).refine(
  (body) =>
    body.details === undefined ||
    new TextEncoder().encode(JSON.stringify(body.details)).length <= MAX_HEARTBEAT_DETAILS_BYTES,
  { error: `details: at most ${MAX_HEARTBEAT_DETAILS_BYTES} bytes of JSON`, path: ["details"] },
);

/** POST /runs/:id/cancel; the body is optional. */
export const cancelRunBody = z.strictObject({ reason: storableString().max(1000).optional() })
  .optional();

/** POST /runs/:id/resume; pg_net sends `{}`. */
export const resumeRunBody = z.strictObject({}).optional();

/** POST /tick. 50 runs at most: they all share one invocation's time and memory. */
export const tickBody = z.strictObject({ limit: z.int().min(1).max(50).optional() }).optional();

/**
 * The parsed value, or a 422 naming each field that is wrong: VALIDATION_FAILED, or the code
 * every issue carries when they all carry the same one (VALUE_NOT_STORABLE).
 */
export function parse<T extends z.ZodType>(schema: T, value: unknown, what: string): z.output<T> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const { issues } = result.error;
  const problems = issues.map((issue) =>
    issue.path.length ? `${issue.path.map(String).join(".")}: ${issue.message}` : issue.message
  );
  const codes = new Set(issues.map(issueCode));
  const code = codes.size === 1 ? [...codes][0]! : "VALIDATION_FAILED";
  throw new HttpError(422, code, `invalid ${what}: ${problems.join("; ")}`);
}

function issueCode(issue: z.core.$ZodIssue): ErrorCode {
  const code = issue.code === "custom" ? issue.params?.code : undefined;
  return isErrorCode(code) ? code : "VALIDATION_FAILED";
}
