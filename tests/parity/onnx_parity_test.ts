/**
 * ONNX export parity with the official code: every manifest entry exported with the reference's fill()
 * weights and run in ONNX Runtime at its full optimisation level reproduces the official logits and features
 * within 5e-5, and ONNX Runtime logs no warning while loading any of them.
 */
import assert from "node:assert/strict";
import { manifest } from "../support/fixtures.ts";

const TOL = 5e-5;

Deno.test("ONNX Runtime parity: every manifest entry (and opsets 13, 21, a fixed batch) within 5e-5, no warnings", async (t) => {
  // ORT logs from native code, so the runs happen in a child whose stderr we read
  const entries = Object.keys(manifest());
  const extra = ["t2t_vit_7:opset=13", "t2t_vit_14_se:opset=21", "t2t_vit_7:batch=2"];
  const run = (args: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--config",
        new URL("../../deno.json", import.meta.url).pathname,
        new URL("../support/onnx_parity_child.ts", import.meta.url).pathname,
        ...args,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
  const isWarning = (l: string) => /\[[WEF]:onnxruntime/.test(l) || /warn/i.test(l);
  // the control: a graph ORT warns about, so a silent log below means no warnings, not a deaf check
  const control = await run(["control"]);
  const controlLog = new TextDecoder().decode(control.stderr);
  assert.equal(control.code, 0, controlLog);
  assert.ok(controlLog.split("\n").some(isWarning), `no warning seen in the control's log: ${controlLog}`);
  const out = await run([...entries, ...extra]);
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `child failed:\n${stderr}`);
  const rows = new Map<
    string,
    { logits: number; features: number; exportAndLoadMs: number; runMs: number }
  >();
  for (const line of stdout.split("\n").filter((l) => l.startsWith("{"))) {
    const r = JSON.parse(line);
    rows.set(r.arg, r);
  }
  for (const arg of [...entries, ...extra]) {
    await t.step(arg, () => {
      const r = rows.get(arg);
      assert.ok(r, `no result for ${arg}`);
      console.log(
        `${arg}: logits ${r.logits.toExponential(2)}, features ${r.features.toExponential(2)} ` +
          `(export + session ${r.exportAndLoadMs} ms, batch 2 ${r.runMs} ms)`,
      );
      assert.ok(r.logits <= TOL && r.features <= TOL, `${arg}: logits ${r.logits}, features ${r.features}`);
    });
  }
  // logSeverityLevel 2: anything ORT logged is a warning or worse ([W:onnxruntime...] / [E:...])
  const logged = stderr.split("\n").filter(isWarning);
  assert.deepEqual(logged, [], `ONNX Runtime logged:\n${logged.join("\n")}`);
});
