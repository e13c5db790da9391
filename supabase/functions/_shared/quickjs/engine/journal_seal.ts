/**
 * Journal payloads at rest: with an operator key (QUICKJS_ENCRYPTION_KEY, the snapshots' key
 * ring) the arguments, results and errors the engine writes to quickjs.calls are sealed with
 * AES-256-GCM, and opened again when the journal is read back (a claim, record_call's answer,
 * listCalls). The database holds only `{"$sealed": keyId, "data": base64}` in their place.
 *
 * The IV is synthetic (an HMAC of the row's place and the plaintext): record_call compares a
 * call's arguments with the journal's to tell a replay from a changed call, so equal
 * arguments must seal to equal bytes. A call re-issued after a rotation is sealed with the
 * key its journal entry names (remembered from the claim), so the comparison still holds.
 * The row's place (run, seq, field) is the associated data: a sealed value moved to another
 * row does not open. Payloads SQL writes itself stay plain: a child's input and result
 * (copies of the child run's input and result), kv's results (kv's values), and an
 * asynchronous call's completion made in SQL (one posted to the function's route passes
 * through here: completeCall).
 */
import type { Json } from "../sandbox/vm.ts";
import { derivedKeys, type SnapshotKey } from "../sandbox/snapshot_codec.ts";
import type { CallRecord, ClaimedRun, KvCallResult, Store } from "../store/store.ts";

const IV_BYTES = 12;

/** A sealed payload as the journal stores it. */
export interface Sealed {
  $sealed: string;
  data: string;
  /** Kept plain on an error, so operators can still search failures by code. */
  code?: string;
}

export function isSealed(value: unknown): value is Sealed {
  return typeof value === "object" && value !== null && !Array.isArray(value) &&
    typeof (value as Sealed).$sealed === "string" && typeof (value as Sealed).data === "string";
}

function base64(bytes: Uint8Array): string {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

function unbase64(text: string): Uint8Array<ArrayBuffer> {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

/** Seals `value` for one field of one journal row. */
export async function seal(key: SnapshotKey, place: string, value: Json): Promise<Sealed> {
  const { mac: ivKey, aes } = await derivedKeys(key, "journal");
  const aad = new TextEncoder().encode(place);
  const plain = new TextEncoder().encode(JSON.stringify(value));
  const seed = new Uint8Array(aad.length + 1 + plain.length);
  seed.set(aad, 0);
  seed.set(plain, aad.length + 1);
  const iv = new Uint8Array(await crypto.subtle.sign("HMAC", ivKey, seed)).slice(0, IV_BYTES);
  const sealed = new Uint8Array(
    await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: aad }, aes, plain),
  );
  const out = new Uint8Array(IV_BYTES + sealed.length);
  out.set(iv, 0);
  out.set(sealed, IV_BYTES);
  return { $sealed: key.id, data: base64(out) };
}

/** Opens a sealed payload; throws naming the key when it is missing or the bytes are wrong. */
export async function open(
  keys: readonly SnapshotKey[],
  place: string,
  sealed: Sealed,
): Promise<Json> {
  const key = keys.find((k) => k.id === sealed.$sealed);
  if (!key) {
    throw new Error(`journal entry ${place} is sealed with key ${sealed.$sealed}, not in the ring`);
  }
  const { aes } = await derivedKeys(key, "journal");
  const bytes = unbase64(sealed.data);
  let plain: ArrayBuffer;
  try {
    plain = await crypto.subtle.decrypt(
      {
        name: "AES-GCM",
        iv: bytes.slice(0, IV_BYTES),
        additionalData: new TextEncoder().encode(place),
      },
      aes,
      bytes.slice(IV_BYTES),
    );
  } catch (e) {
    throw new Error(`journal entry ${place} does not open with key ${key.id}`, { cause: e });
  }
  return JSON.parse(new TextDecoder().decode(plain)) as Json;
}

/** The first journal entry still sealed after opening (no key for it), as "seq (key id)". */
export function unreadableEntry(calls: readonly CallRecord[]): string | undefined {
  for (const call of calls) {
    for (const value of [call.args[0], call.result, call.error]) {
      if (isSealed(value)) return `call ${call.seq} (sealed with key ${value.$sealed})`;
    }
  }
  return undefined;
}

/**
 * `store` with the journal sealed by the ring's first key (the rest only open older
 * entries). Every other operation is the store's own.
 */
export function sealJournal(store: Store, keys: readonly SnapshotKey[]): Store {
  if (keys.length === 0) return store;
  const writer = keys[0]!;
  // per run, the key each journaled call after its snapshot was sealed with (from the claim)
  const pinned = new Map<string, Map<number, string>>();
  const keyFor = (runId: string, seq: number): SnapshotKey => {
    const id = pinned.get(runId)?.get(seq);
    return (id && keys.find((k) => k.id === id)) || writer;
  };
  const sealArgs = async (runId: string, seq: number, args: Json[]): Promise<Json[]> => [
    await seal(keyFor(runId, seq), `${runId}/${seq}/args`, args) as unknown as Json,
  ];
  // an entry that does not open (its key is not in the ring) stays sealed: the invocation
  // then fails the run with JOURNAL_UNREADABLE (unreadableEntry) instead of guessing
  const tryOpen = async (at: string, value: Sealed): Promise<Json | Sealed> => {
    try {
      return await open(keys, at, value);
    } catch {
      return value;
    }
  };
  const openCall = async (runId: string, call: CallRecord): Promise<CallRecord> => {
    const at = `${runId}/${call.seq}`;
    const [args] = call.args;
    const out = { ...call };
    if (call.args.length === 1 && isSealed(args)) {
      pinned.get(runId)?.set(call.seq, args.$sealed);
      const opened = await tryOpen(`${at}/args`, args);
      if (!isSealed(opened)) out.args = opened as Json[];
    }
    if (isSealed(call.result)) out.result = await tryOpen(`${at}/result`, call.result) as Json;
    if (isSealed(call.error)) {
      out.error = await tryOpen(`${at}/error`, call.error) as unknown as CallRecord["error"];
    }
    return out;
  };
  /** A call's outcome with its result or error sealed (an error keeps its code in plain). */
  const sealOutcome = async <T extends { seq: number; ok: boolean; result?: Json; error?: Json }>(
    runId: string,
    outcome: T,
  ): Promise<T> => {
    const at = `${runId}/${outcome.seq}`;
    const key = keyFor(runId, outcome.seq);
    const sealed = { ...outcome };
    if (outcome.ok) {
      sealed.result = await seal(key, `${at}/result`, outcome.result ?? null) as unknown as Json;
    } else {
      const code = (outcome.error as { code?: unknown } | undefined)?.code;
      sealed.error = {
        ...await seal(key, `${at}/error`, outcome.error ?? null),
        ...(typeof code === "string" ? { code } : {}),
      } as unknown as Json;
    }
    return sealed;
  };
  const overrides: Partial<Store> = {
    async claimRuns(claim) {
      const runs = await store.claimRuns(claim);
      return await Promise.all(runs.map(async (run): Promise<ClaimedRun> => {
        pinned.set(run.id, new Map());
        return { ...run, calls: await Promise.all(run.calls.map((c) => openCall(run.id, c))) };
      }));
    },
    async recordCall(lease, call, now) {
      const args = await sealArgs(lease.runId, call.seq, call.args);
      return await openCall(lease.runId, await store.recordCall(lease, { ...call, args }, now));
    },
    async kvCall(lease, call, now) {
      const args = await sealArgs(lease.runId, call.seq, call.args);
      const done: KvCallResult = await store.kvCall(lease, { ...call, args }, now);
      return { ...done, call: await openCall(lease.runId, done.call) };
    },
    async startChild(lease, child, now) {
      return await openCall(lease.runId, await store.startChild(lease, child, now));
    },
    async settleCall(lease, settle, now) {
      const sealed = await sealOutcome(lease.runId, settle);
      return await openCall(lease.runId, await store.settleCall(lease, sealed, now));
    },
    async recordSettledCall(lease, call, now) {
      const sealed = await sealOutcome(lease.runId, call);
      const args = await sealArgs(lease.runId, call.seq, call.args);
      return await openCall(
        lease.runId,
        await store.recordSettledCall(lease, { ...sealed, args }, now),
      );
    },
    async retryCall(lease, retry, now) {
      const { error } = await sealOutcome(lease.runId, { ...retry, ok: false });
      return await openCall(lease.runId, await store.retryCall(lease, { ...retry, error }, now));
    },
    // an asynchronous service's completion, through the engine's store (the HTTP route)
    async completeCall(completion, now) {
      const { runId, seq, token } = completion;
      const ok = completion.error === undefined;
      const sealed = await sealOutcome(runId, {
        seq,
        ok,
        result: completion.result,
        // sealed whole, so SQL cannot fill in its defaults: the shape it would give
        error: completion.error && {
          name: "ServiceError",
          code: completion.error.code ?? "SERVICE_ERROR",
          message: completion.error.message ?? `call ${seq} failed`,
          ...(completion.error.data !== undefined ? { data: completion.error.data } : {}),
        },
      });
      const done = await store.completeCall(
        ok
          ? { runId, seq, token, result: sealed.result }
          : { runId, seq, token, error: sealed.error as { code?: string } },
        now,
      );
      return { ...await openCall(runId, done), alreadyCompleted: done.alreadyCompleted };
    },
    async issueCompletion(lease, seq, sha256, now) {
      return await openCall(lease.runId, await store.issueCompletion(lease, seq, sha256, now));
    },
    async completionSent(lease, seq, deadlineAt, now) {
      return await openCall(lease.runId, await store.completionSent(lease, seq, deadlineAt, now));
    },
    async listCalls(runId) {
      return await Promise.all((await store.listCalls(runId)).map((c) => openCall(runId, c)));
    },
    // a suspended or ended run's calls are not re-issued by this worker: forget their keys
    async suspendRun(lease, suspend, now) {
      pinned.delete(lease.runId);
      return await store.suspendRun(lease, suspend, now);
    },
    async completeRun(lease, result, logs, now) {
      pinned.delete(lease.runId);
      return await store.completeRun(lease, result, logs, now);
    },
    async failRun(lease, error, logs, now) {
      pinned.delete(lease.runId);
      return await store.failRun(lease, error, logs, now);
    },
  };
  return new Proxy(store, {
    get(target, prop) {
      if (Object.hasOwn(overrides, prop)) return overrides[prop as keyof Store];
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}
