/**
 * One fresh VM made ahead of need, so that a claimed run starts without waiting for one:
 * making a VM (a module instance, the runtime and context, the boot image copied in) is
 * ~3 ms of the ~6 ms from enqueue to a task's first line on an idle worker. Opt-in
 * (EngineConfig.spareVm): the self-hosted worker keeps one; the edge function, which counts
 * every VM against its memory limit, does not.
 */
import { TaskVm } from "../sandbox/vm.ts";
import type { SandboxLimits } from "../sandbox/limits.ts";

export class SpareVm {
  readonly #limits: SandboxLimits;
  readonly #key: string;
  readonly #now: () => number;
  #spare: Promise<TaskVm | undefined> | undefined;
  #closed = false;

  /** `limits`: the only limits it serves (the default ones); `now`: the tasks' clock. */
  constructor(limits: SandboxLimits, now: () => number) {
    this.#limits = limits;
    this.#key = JSON.stringify(limits);
    this.#now = now;
  }

  /** Makes the spare (again) in the background, unless there is one. */
  fill(): void {
    if (this.#spare || this.#closed) return;
    this.#spare = new Promise<void>((resolve) => setTimeout(resolve, 0))
      .then(() => TaskVm.create({ limits: this.#limits, now: this.#now }))
      .catch(() => undefined); // then the run makes its own, as without a spare
  }

  /** The spare when it is ready and was made for `limits`; a new one is made after it. */
  async take(limits: SandboxLimits): Promise<TaskVm | undefined> {
    if (!this.#spare || JSON.stringify(limits) !== this.#key) return undefined;
    const spare = this.#spare;
    this.#spare = undefined;
    const vm = await spare;
    this.fill();
    return vm;
  }

  /** Disposes the spare; no new one is made. */
  async close(): Promise<void> {
    this.#closed = true;
    const vm = await this.#spare;
    this.#spare = undefined;
    vm?.dispose();
  }
}
