/**
 * `--tools` of our worker in bench:peers: `tools.bench.step(i)`, an in-process step that
 * returns at once, so a ten-step workflow measures the engine's cost per step (the journal
 * write, settle, drain), like a DBOS step with an empty body.
 */
import type { CustomTool } from "../../supabase/functions/_shared/quickjs/mod.ts";

const bench: CustomTool = (_path, args) => Promise.resolve(args[0] ?? null);

export default { bench };
