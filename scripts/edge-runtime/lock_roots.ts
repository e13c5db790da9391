/**
 * Not run: the packages the function loads by dynamic import, listed statically so that
 * `deno cache` under Deno 2.1.4 puts them in scripts/edge-runtime/deno.lock (see run.sh).
 */
import "@jitl/quickjs-wasmfile-release-asyncify";
import "@jitl/quickjs-wasmfile-release-sync";
import "quickjs-emscripten";
import "@supabase/supabase-js";
