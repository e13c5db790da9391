// deno-lint-ignore-file require-await
/**
 * A broken task: it never awaits, so the sandbox interrupts it at its CPU deadline and the
 * run fails with SANDBOX_TIMEOUT. The host and other runs are unaffected.
 * @limits {"sliceMs": 200}
 */
export default async function () {
  let n = 0;
  while (true) n++;
}
