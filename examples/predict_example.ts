/**
 * Classify an image and draw where the model looks, with the library API (what `predict.ts` does, in a
 * few lines).
 *
 * ```sh
 * deno run -A examples/predict_example.ts photo.jpg t2t_vit_14.safetensors   # real weights
 * deno run -A examples/predict_example.ts photo.jpg                           # placeholder weights, offline
 * ```
 *
 * @module
 */

import { fromFloat32 } from "../converters/safetensors.ts";
import { fill } from "../src/core/fill.ts";
import {
  attentionRollout,
  attentionStacks,
  classifyImages,
  encodePng,
  modelPreprocess,
  preprocessImage,
  readImage,
  renderAttention,
} from "../src/images/mod.ts";
import { createModel, tf } from "../zoo/mod.ts";

const [imagePath, weightsPath] = Deno.args;
if (!imagePath) {
  console.error("usage: deno run -A examples/predict_example.ts <image> [weights.safetensors]");
  Deno.exit(2);
}

// 1. The model: converted official weights, or the deterministic placeholder fill for an offline try.
const model = weightsPath
  ? await createModel("t2t_vit_14", { weights: weightsPath })
  : await createModel("t2t_vit_7");
if (!weightsPath) {
  console.warn("no weights given: using placeholder weights, the classes below are meaningless");
  model.loadStateDict(
    new Map([...model.stateDict()].map(([k, t]) => [k, fromFloat32(fill(k, t.shape), t.shape)])),
  );
}

// 2. Decode as Pillow does, preprocess as timm's evaluation transform does, classify.
const image = await readImage(imagePath);
const [top5] = await classifyImages(model, [image], { topk: 5 });
for (const p of top5) console.log(`${(100 * p.probability).toFixed(2).padStart(6)}%  ${p.label}`);

// 3. Attention rollout over the preprocessed image, written as a PNG.
const { tensor, image: seen } = preprocessImage(image, modelPreprocess(model));
const size = model.config.imgSize;
const x = tf.tensor4d(tensor, [1, 3, size, size]);
const { logits, attentions } = model.forwardWithAttention(x);
const [stack] = await attentionStacks(attentions);
tf.dispose([x, logits, ...attentions]);
const out = imagePath.replace(/\.[^./]*$/, "") + "-attention.png";
await Deno.writeFile(out, encodePng(renderAttention(seen, attentionRollout(stack), { colormap: "jet" })));
console.log(`attention map: ${out}`);
model.dispose();
