// deno-lint-ignore-file require-await
/**
 * Greets someone: the smallest task. Input: { name }.
 */
export default async function (input, ctx) {
  const name = input?.name ?? "world";
  console.log(`Hello, ${name}! (run ${ctx.runId.slice(0, 8)}, attempt ${ctx.attempt})`);
  return { greeting: `Hello, ${name}!` };
}
