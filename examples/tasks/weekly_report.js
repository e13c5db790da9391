/**
 * A durable task: counts words in each document with a child run, waits two hours (the
 * process may end: the whole VM is saved to Postgres), then reports. Local variables, the
 * loop and the `for` position all survive the sleep. Input: { documents: string[] }.
 * @tools kv, tasks
 */
export default async function (input) {
  const totals = [];
  for (const text of input.documents) {
    const { words } = await tools.tasks.execute("count_words", { text });
    totals.push(words);
  }
  const runsSoFar = ((await tools.kv.get("weekly_report:runs")) ?? 0) + 1;
  await tools.kv.set("weekly_report:runs", runsSoFar);
  console.log(`counted ${totals.length} documents; waiting two hours before reporting`);
  const before = Date.now();
  await sleep("2 hours");
  console.log(`woke up after ${Math.round((Date.now() - before) / 60000)} minutes`);
  return { documents: totals.length, words: totals.reduce((a, b) => a + b, 0), report: runsSoFar };
}
