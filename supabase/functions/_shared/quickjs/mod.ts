/**
 * The quickjs library: durable, sandboxed JavaScript tasks over Postgres. This is its one
 * public entry; the edge function, the CLIs, the benchmarks and the tests import from here
 * (dev.ts adds what only local use needs). Nothing here imports PGlite or reads files
 * outside supabase/functions/, so a deploy bundles only what runs.
 */

// the one error type and every code
export {
  ERROR_CODES,
  type ErrorCode,
  type ErrorInfo,
  isErrorCode,
  QuickJsError,
} from "./errors.ts";

// the run loop and its configuration
export {
  type Budget,
  DEFAULT_BUDGET,
  Engine,
  type EngineConfig,
  type EngineEvent,
  type InvocationResult,
  type InvocationSignals,
  type RunExecutor,
} from "./engine/run_loop.ts";
export { type Clock, systemClock } from "./engine/clock.ts";
export {
  IsolateLife,
  type IsolateLimits,
  isolateLimitsFromEnv,
  processCpuMs,
  SUPABASE_FREE,
  UNLIMITED,
} from "./engine/isolate.ts";
export {
  CALL_STATUS,
  type CallStatus,
  isFinal,
  RUN_STATUS,
  type RunStatus,
} from "./engine/states.ts";
export { MAX_SLEEP_MS, parseDuration } from "./engine/durations.ts";

// tools
export {
  type CallCompletion,
  completionBaseUrlFromEnv,
  type CustomTool,
  type ToolCallContext,
  ToolRegistry,
  type ToolsOptions,
} from "./engine/tools.ts";
export { httpOptionsFromEnv, type HttpToolOptions, readCapped } from "./engine/http_tool.ts";
export { type CallError, ToolError } from "./engine/tool_errors.ts";
export { isDataError, storable } from "./engine/storable.ts";

// the store and its deployable drivers
export {
  type CallRecord,
  type ClaimedRun,
  type DispatchHealth,
  type Lease,
  type LogLine,
  type PublishedTask,
  type RepairResult,
  type RunView,
  type SnapshotInfo,
  type SnapshotList,
  type SqlDriver,
  Store,
  StoreError,
  type StuckRun,
  type TaskRetry,
  type WaitingOn,
} from "./store/store.ts";
export {
  byteaFromHex,
  byteaHex,
  hasDefault,
  type Operation,
  type OperationArgs,
  type OperationResult,
  OPERATIONS,
  paramType,
  type SqlType,
} from "./store/operations.ts";
export { jsonbKeepsKeyOrder } from "./store/key_order.ts";
export { postgresDriver } from "./store/postgres.ts";
export { supabaseDriver } from "./store/supabase.ts";

// the sandbox and its snapshots
export {
  type CallOutcome,
  type HostCall,
  type Json,
  type LogEntry,
  type TaskContext,
  TaskVm,
  type VmState,
} from "./sandbox/vm.ts";
export {
  adoptBootImage,
  getBootImage,
  shareBootImage,
  type SharedBootImage,
} from "./sandbox/boot_image.ts";
export {
  DEFAULT_LIMITS,
  LIMIT_BOUNDS,
  observeSlices,
  resolveLimits,
  type SandboxLimits,
  type SliceObserver,
} from "./sandbox/limits.ts";
export {
  incompatibility,
  readSnapshot,
  type Restored,
  type RestoreOptions,
  restoreSnapshot,
  type Snapshot,
  type TakeOptions,
  takeSnapshot,
} from "./sandbox/snapshot.ts";
export {
  decodeSnapshot,
  encodeSnapshot,
  SNAPSHOT_FORMAT,
  type SnapshotHeader,
  type SnapshotKey,
  type SnapshotKeys,
  validateHeader,
} from "./sandbox/snapshot_codec.ts";
export {
  ENCRYPTION_KEY_VARIABLE,
  parseSnapshotKeys,
  snapshotKeysFromEnv,
} from "./sandbox/snapshot_keys.ts";
export { isSealed, type Sealed, sealJournal } from "./engine/journal_seal.ts";
export { type RunError, SandboxError } from "./sandbox/errors.ts";
export {
  BUILD_VARIANT,
  type BuildVariant,
  getBuild,
  shareCompiled,
  VENDORED_WASM_DIR,
  WasmMissingError,
} from "./sandbox/wasm.ts";
