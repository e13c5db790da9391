const rss = () => { const s = Deno.readTextFileSync("/proc/self/status"); return Number(s.match(/VmRSS:\s+(\d+)/)![1]) / 1024; };
const log = (what: string) => console.log(what.padEnd(40), rss().toFixed(1), "MB");
const { getBuild, instantiate } = await import("../supabase/functions/_shared/quickjs/sandbox/wasm.ts");
const build = await getBuild(); log("compiled");
const keep: unknown[] = [];
for (let i = 0; i < 4; i++) { keep.push(await instantiate(build)); log(`instance ${i + 1}`); }
const inst = keep[0] as { module: { newRuntime(): { newContext(): { evalCode(s: string): unknown } } } };
const rt = inst.module.newRuntime(); log("runtime"); const ctx = rt.newContext(); log("context");
const { PRELUDE_SOURCE } = await import("../supabase/functions/_shared/quickjs/sandbox/prelude.ts");
ctx.evalCode(PRELUDE_SOURCE); log("prelude evaluated");
const inst2 = keep[1] as typeof inst;
const ctx2 = inst2.module.newRuntime().newContext(); log("context 2");
ctx2.evalCode(PRELUDE_SOURCE); log("prelude evaluated 2");
const mem = (keep[0] as {memory: WebAssembly.Memory}).memory; const b = new Uint8Array(mem.buffer); let touched = 0;
for (let p = 0; p < b.length; p += 4096) { let nz = false; for (let i = p; i < p + 4096; i += 64) if (b[i]) { nz = true; break; } if (nz) touched++; }
log(`(memory 1: ${touched} nonzero pages of ${b.length / 4096})`);
