import { getBootImage } from "../supabase/functions/_shared/quickjs/mod.ts";
const boot = await getBootImage();
const bytes = new Uint8Array(boot.image.buffer);
const P = 4096; let zero = 0, total = 0;
for (let p = 0; p < bytes.length; p += P) { total++; let z = true; for (let i = p; i < p + P; i += 4) { if (bytes[i] | bytes[i+1] | bytes[i+2] | bytes[i+3]) { z = false; break; } } if (z) zero++; }
console.log({ total, zero, heapBase: boot.build.facts.heapBase, bytes: bytes.length });
import { deadStackPages } from "../supabase/functions/_shared/quickjs/sandbox/layout.ts";
const dead = deadStackPages(boot.build.facts.heapBase);
let copied = 0, copiedZero = 0;
for (let pg = 0; pg < total; pg++) { if (pg >= dead.first && pg < dead.end) continue; copied++; let z = true; for (let i = pg*P; i < pg*P+P; i++) if (bytes[i]) { z = false; break; } if (z) copiedZero++; }
console.log({ dead, copied, copiedZero });
