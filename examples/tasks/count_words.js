// deno-lint-ignore-file require-await
/**
 * Counts words in a text, in the CommonJS shape of the system this replaces.
 * Input: { text }.
 */
module.exports = async function (input) {
  const words = String(input?.text ?? "").toLowerCase().match(/[\p{L}\p{N}']+/gu) ?? [];
  const counts = {};
  for (const word of words) counts[word] = (counts[word] ?? 0) + 1;
  const top = Object.entries(counts).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  return { words: words.length, distinct: top.length, top: top.slice(0, 3) };
};
