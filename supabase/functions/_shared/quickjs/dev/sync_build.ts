/**
 * The sync QuickJS build, which only the benchmark and the tests that compare the two
 * builds use. Registering it here, behind the dev entry, keeps its wasm package out of
 * the deployed function's graph (tests/deploy/graph_test.ts).
 */
import { newQuickJSWASMModuleFromVariant } from "quickjs-emscripten-core";
import syncPackage from "@jitl/quickjs-wasmfile-release-sync/package.json" with { type: "json" };
import { registerVariant } from "../sandbox/wasm.ts";

/** Makes `variant: "sync"` usable in this process (getBuild, getBootImage, TaskVm.create). */
export function registerSyncBuild(): void {
  registerVariant("sync", {
    packageName: "@jitl/quickjs-wasmfile-release-sync",
    version: syncPackage.version,
    wasmUrl: () => import.meta.resolve("@jitl/quickjs-wasmfile-release-sync/wasm"),
    load: () => import("@jitl/quickjs-wasmfile-release-sync").then((m) => m.default),
    newModule: (variant) => newQuickJSWASMModuleFromVariant(variant as never),
  });
}
