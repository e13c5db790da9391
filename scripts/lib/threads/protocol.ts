/** The messages between the pool (pool.ts) and its threads (thread.ts). */
import type {
  ClaimedRun,
  EngineEvent,
  InvocationResult,
  Operation,
  SharedBootImage,
  SqlDriver,
} from "../../../supabase/functions/_shared/quickjs/mod.ts";

/** What a thread builds its engine from (the parts of EngineConfig that cross a thread). */
export interface ThreadConfig {
  workerId: string;
  leaseSeconds: number;
  inlineSleepMaxMs: number;
  durableAll: boolean;
  spareVm: boolean;
  /** `--tools module.ts`: each thread imports it itself (functions do not cross threads). */
  toolsModule?: string;
  driverKind: SqlDriver["kind"];
  driverDescription: string;
}

/** A driver's error as it crosses: StoreError.from reads `code` (SQLSTATE) and `hint`. */
export interface WireError {
  name: string;
  message: string;
  code?: string;
  hint?: string;
  detail?: string;
}

export type ToThread =
  /** `slot`: two float64s, the current slice's start and deadline (epoch ms; 0: none). */
  /**
   * `compiled` and `boot`: the QuickJS module and the boot image, made once for every
   * thread (wasm.ts shareCompiled, boot_image.ts shareBootImage).
   */
  | {
    type: "init";
    config: ThreadConfig;
    slot: SharedArrayBuffer;
    compiled: WebAssembly.Module;
    boot: SharedBootImage;
  }
  | { type: "run"; run: ClaimedRun; claimedAtEpoch: number }
  | { type: "reply"; id: number; ok: true; value: unknown }
  | { type: "reply"; id: number; ok: false; error: WireError }
  | { type: "yield" }
  | { type: "abort" }
  | { type: "close" };

export type FromThread =
  | { type: "ready" }
  | { type: "init-failed"; message: string }
  | { type: "call"; id: number; op: Operation; args: unknown }
  | { type: "event"; event: EngineEvent }
  | { type: "done"; result: InvocationResult }
  | { type: "threw"; message: string };

export function wireError(e: unknown): WireError {
  const err = (e ?? {}) as Record<string, unknown>;
  const text = (key: string) => typeof err[key] === "string" ? err[key] as string : undefined;
  return {
    name: text("name") ?? "Error",
    message: text("message") ?? String(e),
    ...(text("code") ? { code: text("code") } : {}),
    ...(text("hint") ? { hint: text("hint") } : {}),
    ...(text("detail") ? { detail: text("detail") } : {}),
  };
}
