/**
 * One thread of the pool (pool.ts): a whole engine that runs one invocation at a time. Its
 * database is the main thread's, reached by messages (every store operation is one SQL
 * function call, so a thread stopped between two of them leaves nothing half-written). It
 * publishes each VM slice's start and deadline in the shared `slot`, where the main thread's
 * watchdog reads them: a built-in that loops in C never returns to the interrupt handler,
 * and then only stopping the thread ends it.
 */
/// <reference lib="deno.worker" />
import {
  Engine,
  type InvocationSignals,
} from "../../../supabase/functions/_shared/quickjs/engine/run_loop.ts";
import { type SqlDriver, Store } from "../../../supabase/functions/_shared/quickjs/store/store.ts";
import {
  completionBaseUrlFromEnv,
  ToolRegistry,
} from "../../../supabase/functions/_shared/quickjs/engine/tools.ts";
import { httpOptionsFromEnv } from "../../../supabase/functions/_shared/quickjs/engine/http_tool.ts";
import { observeSlices } from "../../../supabase/functions/_shared/quickjs/sandbox/limits.ts";
import { shareCompiled } from "../../../supabase/functions/_shared/quickjs/sandbox/wasm.ts";
import { adoptBootImage } from "../../../supabase/functions/_shared/quickjs/sandbox/boot_image.ts";
import { loadToolsModule } from "../tools_module.ts";
import type { FromThread, ThreadConfig, ToThread, WireError } from "./protocol.ts";

const post = (message: FromThread) => self.postMessage(message);

let engine: Engine | undefined;
const replies = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
let nextCall = 1;
/** The running invocation's signals, fired by the main thread's yield and abort. */
let current: { yield: AbortController; abort: AbortController } | undefined;

/** An error as the main thread's driver threw it: StoreError.from reads code and hint. */
function revive(wire: WireError): Error {
  return Object.assign(new Error(wire.message), wire);
}

function rpcDriver(kind: SqlDriver["kind"], description: string): SqlDriver {
  return {
    kind,
    description,
    call(op, args) {
      return new Promise((resolve, reject) => {
        const id = nextCall++;
        replies.set(id, { resolve: resolve as (v: unknown) => void, reject });
        post({ type: "call", id, op, args });
      });
    },
    close: () => Promise.resolve(),
  };
}

async function init(config: ThreadConfig, slot: SharedArrayBuffer): Promise<void> {
  const slice = new Float64Array(slot);
  const origin = performance.timeOrigin;
  observeSlices((deadline) => {
    if (deadline === Infinity) {
      slice[1] = 0;
      return;
    }
    const now = origin + performance.now();
    slice[0] = now;
    slice[1] = origin + deadline;
  });
  const store = new Store(rpcDriver(config.driverKind, config.driverDescription));
  engine = new Engine({
    store,
    tools: new ToolRegistry(store, {
      http: httpOptionsFromEnv(Deno.env),
      custom: await loadToolsModule(config.toolsModule),
      completionBaseUrl: completionBaseUrlFromEnv(Deno.env),
    }),
    workerId: config.workerId,
    leaseSeconds: config.leaseSeconds,
    inlineSleepMaxMs: config.inlineSleepMaxMs,
    durableAll: config.durableAll,
    spareVm: config.spareVm,
    onEvent: (event) => post({ type: "event", event }),
  });
  await engine.prepare();
}

async function invoke(message: Extract<ToThread, { type: "run" }>): Promise<void> {
  const signals = { yield: new AbortController(), abort: new AbortController() };
  current = signals;
  const options: InvocationSignals = {
    yield: signals.yield.signal,
    abort: signals.abort.signal,
    // the main thread's performance.now() is not ours: both are offsets of the epoch
    claimedAt: message.claimedAtEpoch - performance.timeOrigin,
  };
  try {
    const result = await engine!.runClaimed(message.run, options);
    post({ type: "done", result });
  } catch (e) {
    post({ type: "threw", message: (e as Error)?.message ?? String(e) });
  } finally {
    current = undefined;
  }
}

self.onmessage = (event: MessageEvent<ToThread>) => {
  const message = event.data;
  switch (message.type) {
    case "init":
      shareCompiled(message.compiled);
      adoptBootImage(message.boot);
      init(message.config, message.slot).then(
        () => post({ type: "ready" }),
        (e) => post({ type: "init-failed", message: (e as Error)?.message ?? String(e) }),
      );
      return;
    case "run":
      invoke(message);
      return;
    case "reply": {
      const waiting = replies.get(message.id);
      replies.delete(message.id);
      if (!waiting) return;
      if (message.ok) waiting.resolve(message.value);
      else waiting.reject(revive(message.error));
      return;
    }
    case "yield":
      current?.yield.abort(new Error("the worker is stopping"));
      return;
    case "abort":
      current?.abort.abort(new Error("aborted"));
      return;
    case "close":
      engine?.close().finally(() => self.close());
      return;
  }
};
