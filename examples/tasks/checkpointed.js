/**
 * Long CPU work split with checkpoint(): each chunk ends with a suspension, so no single
 * invocation exceeds its CPU budget. Input: { chunks }.
 */
export default async function ({ chunks = 5 }) {
  let primes = 0;
  for (let chunk = 0; chunk < chunks; chunk++) {
    for (let n = chunk * 20000; n < (chunk + 1) * 20000; n++) {
      let prime = n > 1;
      for (let d = 2; d * d <= n; d++) {
        if (n % d === 0) {
          prime = false;
          break;
        }
      }
      if (prime) primes++;
    }
    await checkpoint();
  }
  return { primes, below: chunks * 20000 };
}
