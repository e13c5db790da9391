/** zod schemas for every request body and path parameter, and the one way to apply them. */
import { z } from "zod";
import { HttpError } from "./errors.ts";

/** Path parameters: run ids are uuids (Postgres would refuse anything else with a 500). */
export const runParams = z.strictObject({ id: z.guid("must be a uuid") });

/** POST /runs. `wait` is capped by the app's maxWaitMs, so the schema is built per app. */
export function startRunBody(maxWaitMs: number) {
  return z.strictObject({
    task: z.string().min(1).max(200).optional(),
    taskId: z.guid("must be a uuid").optional(),
    input: z.json().optional(),
    idempotencyKey: z.string().min(1).max(200).optional(),
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

/** POST /runs/:id/cancel; the body is optional. */
export const cancelRunBody = z.strictObject({ reason: z.string().max(1000).optional() })
  .optional();

/** POST /runs/:id/resume; pg_net sends `{}`. */
export const resumeRunBody = z.strictObject({}).optional();

/** POST /tick. 50 runs at most: they all share one invocation's time and memory. */
export const tickBody = z.strictObject({ limit: z.int().min(1).max(50).optional() }).optional();

/** The parsed value, or a 422 VALIDATION_FAILED naming each field that is wrong. */
export function parse<T extends z.ZodType>(schema: T, value: unknown, what: string): z.output<T> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) =>
    issue.path.length ? `${issue.path.join(".")}: ${issue.message}` : issue.message
  );
  throw new HttpError(422, "VALIDATION_FAILED", `invalid ${what}: ${problems.join("; ")}`);
}
