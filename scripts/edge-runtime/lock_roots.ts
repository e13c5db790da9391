/**
 * Not run: the packages the function loads by dynamic import, listed statically so that
 * `deno cache` under Deno 2.1.4 puts them in scripts/edge-runtime/deno.lock. To remake that
 * lock after a version change, from a folder holding only a copy of deno.json and this file:
 *   DENO_TLS_CA_STORE=system npx -y deno@2.1.4 cache --lock=v4.lock lock_roots.ts
 * (2.1.4 reads the machine's CA store only when asked).
 */
import "@jitl/quickjs-wasmfile-release-asyncify";
import "@jitl/quickjs-wasmfile-release-sync";
import "quickjs-emscripten-core";
import "@supabase/supabase-js";
