/**
 * Where a fresh VM's time goes, and what module-instance reuse (sandbox/wasm.ts) saves:
 * `deno run -A --frozen bench/vm_create.ts [rounds]`. Each round, interleaved: the parts of
 * a new instance one by one (a 41 MiB WebAssembly.Memory, the module instance with
 * emscripten's initialisation, the boot image copy with the wrappers at its addresses), then TaskVm.create +
 * a trivial run + dispose with reuse off and on. Medians in ms; compare within one run.
 */
import { getBootImage, resolveLimits, TaskVm } from "../supabase/functions/_shared/quickjs/mod.ts";
import { instantiate, setVmReuse } from "../supabase/functions/_shared/quickjs/sandbox/wasm.ts";
import { wasmPagesFor } from "../supabase/functions/_shared/quickjs/sandbox/vm.ts";
import { setUpFromImage } from "../supabase/functions/_shared/quickjs/sandbox/boot_image.ts";
import { deadStackPages, PAGE_SIZE } from "../supabase/functions/_shared/quickjs/sandbox/layout.ts";

const rounds = Number(Deno.args[0] ?? 200);
const limits = resolveLimits({});
const boot = await getBootImage();
const pages = wasmPagesFor(limits, boot.build.facts.heapBase);
const samples: Record<string, number[]> = {};
const add = (k: string, ms: number) => (samples[k] ??= []).push(ms);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

async function trivial(reuse: boolean) {
  setVmReuse(reuse);
  const t0 = performance.now();
  const vm = await TaskVm.create({ limits });
  const t1 = performance.now();
  const state = vm.start({ code: "export default async () => 1;" }, null, {
    runId: "r",
    task: "t",
    attempt: 1,
  });
  if (state.kind !== "done") throw new Error(JSON.stringify(state));
  const t2 = performance.now();
  vm.dispose();
  const t3 = performance.now();
  add(`${reuse ? "reuse" : "new"}: TaskVm.create`, t1 - t0);
  add(`${reuse ? "reuse" : "new"}: start (trivial task)`, t2 - t1);
  add(`${reuse ? "reuse" : "new"}: dispose (zeroing, pooling)`, t3 - t2);
  add(`${reuse ? "reuse" : "new"}: total`, t3 - t0);
}

// the parts, on their own (these instances are dropped whole: they never reach the pool)
for (let i = 0; i < Math.min(rounds, 60) + 5; i++) {
  const warm = i < 5;
  let t = performance.now();
  const memory = new WebAssembly.Memory({ initial: pages, maximum: pages });
  const tMem = performance.now() - t;
  void memory;
  setVmReuse(false);
  t = performance.now();
  const instance = await instantiate(boot.build, pages);
  const tInst = performance.now() - t;
  t = performance.now();
  const bytes = new Uint8Array(instance.memory.buffer);
  const image = new Uint8Array(boot.image.buffer);
  const dead = deadStackPages(boot.build.facts.heapBase);
  bytes.set(image.subarray(0, dead.first * PAGE_SIZE), 0);
  bytes.set(image.subarray(dead.end * PAGE_SIZE), dead.end * PAGE_SIZE);
  const tCopy = performance.now() - t;
  // a second instance for the set-up, as the copy above spoiled the first one's heap
  const instance2 = await instantiate(boot.build, pages);
  t = performance.now();
  setUpFromImage(instance2, boot, () => {}, { reseed: true });
  const tSetup = performance.now() - t;
  if (!warm) {
    add("part: new WebAssembly.Memory (41 MiB)", tMem);
    add("part: instantiate (Memory + Instance + emscripten init)", tInst);
    add("part: boot image copy alone", tCopy);
    add("part: setUpFromImage (image copy + wrappers at its addresses)", tSetup);
  }
}
// reuse off and on in alternating blocks of 10 (the first of each block, which changes
// mode, is not counted: a reuse block starts from a memory pooled without its instance)
for (let block = 0; block < Math.ceil(rounds / 9) * 2 + 2; block++) {
  const reuse = block % 2 === 1;
  for (let i = 0; i < 10; i++) {
    const before = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, v.length]));
    await trivial(reuse);
    if (i === 0 || block < 2) {
      for (const [k, v] of Object.entries(samples)) v.length = before[k] ?? 0;
    }
  }
}
setVmReuse(true);
console.log(
  `boot image ${boot.image.byteLength} bytes, memory ${pages * 65536} bytes, ${rounds} rounds`,
);
for (const [k, xs] of Object.entries(samples)) {
  console.log(
    `${k.padEnd(66)} median ${median(xs).toFixed(3)} ms  p90 ${
      [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.9)]!.toFixed(3)
    }`,
  );
}
