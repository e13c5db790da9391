/**
 * `--tools` of our worker in bench:peers: `tools.bench.step(i)`, an in-process step that
 * returns at once, so a ten-step workflow measures the engine's cost per step (the journal
 * write, drain), like a DBOS step with an empty body.
 */
import type { CustomTool } from "../../supabase/functions/_shared/quickjs/mod.ts";

const bench: CustomTool = (_path, args) => Promise.resolve(args[0] ?? null);
// a pure step, journaled once after it ran, with its result, as DBOS records a step
// (BENCH_JOURNAL_BEFORE=1: record_call before and settle_call after, to compare)
bench.journalAfter = Deno.env.get("BENCH_JOURNAL_BEFORE") !== "1";

export default { bench };
