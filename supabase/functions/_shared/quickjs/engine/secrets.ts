/**
 * Keeps secret values out of what the engine stores: every string written to the journal
 * (call arguments, results, errors), to a run's result or error, or to its logs has each
 * secret value the run received replaced by SECRET_TEXT. The call itself still gets the real
 * value; only the stored copy is redacted.
 */
import type { Json } from "../sandbox/vm.ts";

/** What stored text shows where a secret value was (the VM's console prints the same). */
export const SECRET_TEXT = "[secret]";

/**
 * The run's secret values, longest first (a secret that contains another is replaced whole).
 * The VM knows them (TaskVm.secretValues): the invocation asks it after each secret it
 * delivers and after a restore.
 */
export class SecretSet {
  #values: string[] = [];

  get size(): number {
    return this.#values.length;
  }

  /** Replaces the set with what the VM remembers. */
  learn(values: readonly string[]): void {
    this.#values = values.filter((v) => v.length > 0).sort((a, b) => b.length - a.length);
  }

  /** `text` with each occurrence of a secret replaced by SECRET_TEXT. */
  text(text: string): string {
    for (const secret of this.#values) {
      if (text.includes(secret)) text = text.split(secret).join(SECRET_TEXT);
    }
    return text;
  }

  /** A copy of `value` with every string (object keys too) redacted; `value` itself if none. */
  json<T extends Json | undefined>(value: T): T {
    if (this.#values.length === 0) return value;
    return redact(value, this) as T;
  }

  /** Whether any string in `value` holds a secret. */
  within(value: Json | undefined): boolean {
    return this.#values.length > 0 && redact(value, this) !== value;
  }
}

/** Returns `value` itself when nothing in it changed, so callers can tell. */
function redact(value: Json | undefined, secrets: SecretSet): Json | undefined {
  if (typeof value === "string") return secrets.text(value);
  if (Array.isArray(value)) {
    let out: Json[] | undefined;
    for (let i = 0; i < value.length; i++) {
      const next = redact(value[i], secrets) as Json;
      if (next !== value[i]) (out ??= value.slice())[i] = next;
    }
    return out ?? value;
  }
  if (typeof value === "object" && value !== null) {
    let out: Record<string, Json> | undefined;
    for (const [key, item] of Object.entries(value)) {
      const k = secrets.text(key);
      const next = redact(item, secrets) as Json;
      if (k !== key || next !== item) {
        out ??= { ...value };
        if (k !== key) delete out[key];
        out[k] = next;
      }
    }
    return out ?? value;
  }
  return value;
}
