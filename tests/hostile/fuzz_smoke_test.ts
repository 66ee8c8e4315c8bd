/**
 * CI's short fuzz run: a few thousand seeded cases of `fuzz/run.ts` (the same harness as `deno task fuzz`)
 * over every target, in a child process so its per-case memory figures are its own: no finding (only typed
 * errors escape, no case over a second twice, no memory growth beyond a small multiple of the input, file and
 * memory readers agree, conversions re-read bit for bit). Plus checks of the harness itself: cases are
 * reproducible from (seed, index), and it does report and save what it should.
 */

import assert from "node:assert/strict";
import { Fuzzer, runFuzz } from "../../fuzz/harness.ts";
import { loadCorpus, TARGETS } from "../../fuzz/mutate.ts";
import { REFERENCE_DIR } from "../support/fixtures.ts";

const RUN = new URL("../../fuzz/run.ts", import.meta.url).pathname;
const SEED = 20251121;
const CASES = 2500;

Deno.test("fuzz smoke: 2,500 seeded cases over zip, legacy, pickle and safetensors find nothing", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--v8-flags=--expose-gc",
      RUN,
      "--seed",
      String(SEED),
      "--cases",
      String(CASES),
      "--json",
      "--quiet",
    ],
    env: { T2T_FUZZ_CHILD: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  const report = stdout.slice(0, stdout.indexOf("\n{"));
  console.log(report);
  assert.equal(out.code, 0, `findings (exit ${out.code}):\n${stdout}\n${stderr}`);
  const s = JSON.parse(stdout.slice(stdout.indexOf("\n{") + 1));
  assert.equal(s.cases, CASES);
  assert.equal(s.findings, 0);
  for (const t of TARGETS) {
    // amplify cases are built from scratch and slower: drawn a tenth as often as the others
    assert.ok(s.perTarget[t] > (t === "amplify" ? CASES / 60 : CASES / 8), `${t}: ${s.perTarget[t]} cases`);
    const o = s.outcomes[t] as Record<string, number>;
    assert.ok(o.ok > 0, `${t}: some mutants still read`);
    assert.ok(Object.keys(o).some((k) => k.endsWith("Error")), `${t}: typed errors`);
  }
  assert.ok(s.outcomes.pickle.UnsafePickleError > 0, "inserted hostile globals are refused");
  // wall time depends on what else runs (the slow-case finding already needs two slow runs and CPU time)
  if (s.slowestCpu) assert.ok(s.slowestCpu.cpuMs < 1000, `most CPU-hungry case: ${s.slowestCpu.cpuMs} ms`);
  if (Deno.build.os === "linux") assert.ok(s.peakRssMiB > 0, "memory was measured");
});

Deno.test("fuzz smoke: a case is reproducible from its seed and index", () => {
  const corpus = loadCorpus(REFERENCE_DIR, { maxBytes: 8_000_000 });
  const opts = { seed: 7, cases: 0, target: "all" as const, referenceDir: REFERENCE_DIR };
  const a = new Fuzzer(opts, corpus);
  const b = new Fuzzer(opts, corpus);
  const c = new Fuzzer({ ...opts, seed: 8 }, corpus);
  try {
    let differs = 0;
    for (const i of [0, 1, 17, 999, 123456]) {
      const x = a.generate(i);
      const y = b.generate(i);
      assert.equal(x.target, y.target);
      assert.equal(x.seed.name, y.seed.name);
      assert.deepEqual(x.mutant.steps, y.mutant.steps);
      assert.deepEqual(x.mutant.bytes, y.mutant.bytes);
      assert.equal(x.dtype, y.dtype);
      if (c.generate(i).mutant.steps.join() !== x.mutant.steps.join()) differs++;
    }
    assert.ok(differs >= 4, "another seed gives other cases");
  } finally {
    a.close();
    b.close();
    c.close();
  }
});

Deno.test("fuzz smoke: the harness reports, saves and replays findings", async () => {
  const save = Deno.makeTempDirSync({ prefix: "t2t-fuzz-save-" });
  const corpus = loadCorpus(REFERENCE_DIR, { maxBytes: 8_000_000 });
  try {
    // every case is "slow" with a 0 ms limit: each is a finding, saved with its seed and index
    const slow = await runFuzz(
      { seed: 3, cases: 3, target: "safetensors", maxCaseMs: 0, referenceDir: REFERENCE_DIR, save },
      undefined,
      corpus,
    );
    assert.equal(slow.findings.length, 3);
    assert.ok(slow.findings.every((f) => f.finding?.kind === "slow"));
    const saved = [...Deno.readDirSync(save)].map((e) => e.name).sort();
    assert.deepEqual(saved, [
      "safetensors-seed3-case0.bin",
      "safetensors-seed3-case0.json",
      "safetensors-seed3-case1.bin",
      "safetensors-seed3-case1.json",
      "safetensors-seed3-case2.bin",
      "safetensors-seed3-case2.json",
    ]);
    const info = JSON.parse(Deno.readTextFileSync(`${save}/safetensors-seed3-case1.json`));
    assert.equal(info.seed, 3);
    assert.equal(info.index, 1);
    assert.match(info.replay, /--seed 3 --target safetensors --case 1$/);
    // the saved input replays through the CLI to the same outcome
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", RUN, "--replay", `${save}/safetensors-seed3-case1.bin`, "--target", "safetensors"],
      env: { T2T_FUZZ_CHILD: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.equal(JSON.parse(new TextDecoder().decode(out.stdout)).outcome, info.outcome);
    // an error that is not one of ours is a finding: make JSON.parse throw a TypeError for one case
    const parse = JSON.parse;
    JSON.parse = () => {
      throw new TypeError("boom");
    };
    let untyped;
    try {
      untyped = await runFuzz(
        { seed: 1, cases: 5, target: "safetensors", referenceDir: REFERENCE_DIR },
        undefined,
        corpus,
      );
    } finally {
      JSON.parse = parse;
    }
    assert.ok(untyped.findings.length >= 1, "cases that reach JSON.parse are findings");
    for (const f of untyped.findings) {
      assert.equal(f.finding?.kind, "untyped-error");
      assert.match(f.finding!.message, /TypeError: boom/);
    }
  } finally {
    Deno.removeSync(save, { recursive: true });
  }
});
