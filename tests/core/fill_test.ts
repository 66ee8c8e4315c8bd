import assert from "node:assert/strict";
import { fill, fillInput, fnv1a32, unit } from "../../src/core/fill.ts";
import { readSafetensors, toFloat32 } from "../../converters/safetensors.ts";
import { ref } from "../support/fixtures.ts";

Deno.test("fill: check values of the reference README", () => {
  assert.equal(fnv1a32("input"), 4191711099);
  const u = unit("input", 4);
  [0.64302361, 0.92034459, 0.1919834, 0.224527].forEach((v, i) => assert.ok(Math.abs(u[i] - v) < 1e-7));
  const w = fill("blocks.0.norm1.weight", [4]);
  [0.91709065, 0.9515681, 1.0127422, 0.95385045].forEach((v, i) => assert.ok(Math.abs(w[i] - v) < 1e-7));
});

Deno.test("fillInput matches the reference input_head bit for bit", async () => {
  const { tensors } = await readSafetensors(ref("outputs/t2t_vit_7.safetensors"));
  const head = toFloat32(tensors.get("input_head")!);
  assert.deepEqual(fillInput(2, 224).subarray(0, 16), head);
});
