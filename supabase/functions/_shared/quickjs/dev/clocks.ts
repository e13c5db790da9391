/** Clocks for tests and local runs: one moved by hand, one that jumps to the next wake-up. */
import { type Clock, systemClock } from "../engine/clock.ts";

/** A clock that only moves when told to; sleeps resolve as it passes their deadline. */
export class FakeClock implements Clock {
  #now: number;
  #sleepers: { until: number; resolve: () => void }[] = [];

  constructor(start: Date | string = "2026-01-01T00:00:00Z") {
    this.#now = new Date(start).getTime();
  }

  now(): Date {
    return new Date(this.#now);
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const sleeper = { until: this.#now + Math.max(0, ms), resolve };
      this.#sleepers.push(sleeper);
      signal?.addEventListener("abort", () => {
        this.#sleepers = this.#sleepers.filter((s) => s !== sleeper);
        reject(signal.reason);
      }, { once: true });
      if (ms <= 0) this.advance(0);
    });
  }

  /** Moves time forward and wakes the sleepers that are due, earliest first. */
  advance(ms: number): void {
    this.#now += ms;
    const due = this.#sleepers.filter((s) => s.until <= this.#now).sort((a, b) =>
      a.until - b.until
    );
    this.#sleepers = this.#sleepers.filter((s) => s.until > this.#now);
    for (const sleeper of due) sleeper.resolve();
  }

  /** The number of sleeps waiting. */
  get sleepers(): number {
    return this.#sleepers.length;
  }
}

/**
 * Wall-clock time plus an offset that can jump forward: local runners and tests move it to
 * the next wake-up instead of waiting hours for a durable sleep. In-process sleeps still
 * take real time.
 */
export class VirtualClock implements Clock {
  constructor(public offsetMs = 0) {}

  now(): Date {
    return new Date(Date.now() + this.offsetMs);
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return systemClock.sleep(ms, signal);
  }

  /** Moves the clock forward to `when` (never back). */
  jumpTo(when: Date): void {
    this.offsetMs += Math.max(0, when.getTime() - this.now().getTime());
  }
}
