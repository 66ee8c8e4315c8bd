/**
 * `predict.ts`: classify images with a T2T-ViT from the command line, optionally writing attention maps and
 * features.
 *
 * ```sh
 * deno run -A predict.ts cat.jpg dog.png --model t2t_vit_14 --weights t2t_vit_14.safetensors
 * deno run -A predict.ts cat.jpg --weights t2t_vit_14.safetensors --json --topk 3
 * deno run -A predict.ts cat.jpg --weights w.safetensors --attention cat-attn.png --rollout
 * deno run -A predict.ts *.jpg --weights w.safetensors --features feats.safetensors
 * deno run -A predict.ts cat.jpg --model t2t_vit_14 --pretrained   # the authors' weights, downloaded once
 * deno run -A predict.ts cat.jpg --model t2t_vit_7 --fill-weights   # offline demo, meaningless classes
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { fromFloat32, writeSafetensors } from "./converters/safetensors.ts";
import { writeFileAtomic } from "./src/core/atomic.ts";
import type { TensorMap } from "./src/core/types.ts";
import { ModelError, printable, printableJson, T2tVitError } from "./src/core/errors.ts";
import { fill } from "./src/core/fill.ts";
import {
  attentionRollout,
  attentionStacks,
  batchTensor,
  classTokenAttention,
  type Colormap,
  encodePng,
  modelPreprocess,
  type Prediction,
  type Preprocess,
  preprocessImage,
  readImage,
  renderAttention,
  type RgbImage,
  topK,
  type TransformKind,
} from "./src/images/mod.ts";
import { labelsFor, readLabels } from "./src/labels.ts";
import type { T2tVit } from "./zoo/model.ts";
import {
  type BackendName,
  createModel,
  currentBackend,
  isModelName,
  loadModel,
  MODEL_NAMES,
  type ModelName,
  resolvePretrained,
  setBackend,
  tf,
} from "./zoo/mod.ts";
import { OnnxModel } from "./zoo/onnx_engine.ts";

/** The `--help` text. */
export const USAGE: string = `Usage: deno run -A predict.ts <image>... [options]

Classifies PNG and JPEG images with a T2T-ViT, preprocessing them exactly as the official evaluation does
(timm: Resize(floor(size / 0.9)) bicubic, CenterCrop(size), ImageNet mean/std; Pillow-exact resampling).

Model:
  -w, --weights <file>    safetensors weights (convert an official .pth.tar with convert.ts first)
  -m, --model <name>      architecture: ${MODEL_NAMES.join(", ")};
                          default: the one recorded in the weights' metadata by convert.ts
  --pretrained            the authors' released weights of --model (a name, or a tag such as
                          t2t_vit_14.in1k_384): downloaded once into the cache (T2T_VIT_CACHE, else
                          ~/.cache/t2t-vit), checked, converted, then loaded from there
  --offline               with --pretrained: never use the network (also T2T_VIT_OFFLINE=1)
  --img-size <n>          input size (default: what the weights were trained at, else 224)
  --fill-weights          no weights: deterministic placeholder weights (offline demo; the classes
                          are meaningless). Needs --model.
  --backend <name>        webgpu | wasm | cpu (default: the fastest available)
  --engine <name>         tfjs (default) or onnxruntime: export the model to ONNX in memory and run it
                          on ONNX Runtime (onnxruntime-node, loaded only then; not with --attention)
  --threads <n>           wasm threads (default: every core the machine offers)

Output:
  -k, --topk <n>          classes per image (default 5)
  --json                  print one JSON document on stdout
  --labels <file>         class names, one per line (default: ImageNet for 1000 classes, CIFAR-10/100)
  --transform <kind>      eval (default: the model's ImageNet evaluation transform) or cifar (the
                          official CIFAR transfer-learning test transform)
  --batch <n>             images per forward pass (default 8)
  --attention <out.png>   write the class token's attention laid over each image; with several images,
                          <out>-<image name>.png per image
  --block <k>             the block whose attention to show (default -1: the last; negative counts
                          from the end)
  --rollout               attention rollout through the blocks up to --block instead of one block
  --colormap <name>       jet (default), viridis or gray
  --alpha <a>             heat-map opacity 0..1 (default 0.5)
  --features <out>        write the features (class token after the final norm) of every image as a
                          safetensors file: tensor "features" (images x dim), file names in metadata
  --force                 overwrite existing output files
  -h, --help              show this help

Exit status: 0 when every image was classified; 1 when an image or the weights could not be used (each
cause on stderr, naming the file; the other images still get their answers); 2 on a usage error;
3 on an internal error.`;

interface Options {
  images: string[];
  weights?: string;
  model?: string;
  imgSize?: number;
  fillWeights: boolean;
  pretrained: boolean;
  offline: boolean;
  backend?: BackendName;
  engine: "tfjs" | "onnxruntime";
  threads?: number;
  topk: number;
  json: boolean;
  labels?: string;
  transform: TransformKind;
  batch: number;
  attention?: string;
  block: number;
  rollout: boolean;
  colormap: Colormap;
  alpha: number;
  features?: string;
  force: boolean;
}

class UsageError extends Error {}

function intOption(name: string, v: string | undefined, def: number, min: number): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!/^-?\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min) {
    throw new UsageError(`--${name} must be an integer${min > -Infinity ? ` >= ${min}` : ""}, not '${v}'`);
  }
  return n;
}

function parse(args: string[]): Options | "help" {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      strict: true,
      options: {
        weights: { type: "string", short: "w" },
        model: { type: "string", short: "m" },
        "img-size": { type: "string" },
        "fill-weights": { type: "boolean", default: false },
        pretrained: { type: "boolean", default: false },
        offline: { type: "boolean", default: false },
        backend: { type: "string" },
        engine: { type: "string", default: "tfjs" },
        threads: { type: "string" },
        topk: { type: "string", short: "k" },
        json: { type: "boolean", default: false },
        labels: { type: "string" },
        transform: { type: "string", default: "eval" },
        batch: { type: "string" },
        attention: { type: "string" },
        block: { type: "string" },
        rollout: { type: "boolean", default: false },
        colormap: { type: "string", default: "jet" },
        alpha: { type: "string" },
        features: { type: "string" },
        force: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (e) {
    throw new UsageError((e as Error).message.split("\n")[0]);
  }
  const { values: o, positionals } = parsed;
  if (o.help) return "help";
  if (positionals.length === 0) throw new UsageError("no images given");
  if (o.backend !== undefined && !["webgpu", "wasm", "cpu"].includes(o.backend)) {
    throw new UsageError(`--backend must be webgpu, wasm or cpu, not '${o.backend}'`);
  }
  if (o.engine !== "tfjs" && o.engine !== "onnxruntime") {
    throw new UsageError(`--engine must be tfjs or onnxruntime, not '${o.engine}'`);
  }
  if (o.engine === "onnxruntime" && o.attention !== undefined) {
    throw new UsageError("--attention needs --engine tfjs (the ONNX graph has no attention-map outputs)");
  }
  if (o.pretrained) {
    if (o.model === undefined) throw new UsageError("--pretrained needs --model (a name or a tag)");
    if (o.weights !== undefined || o["fill-weights"]) {
      throw new UsageError("--pretrained excludes --weights and --fill-weights");
    }
    try {
      resolvePretrained(o.model);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  } else if (o.offline) throw new UsageError("--offline only applies with --pretrained");
  if (
    !o.pretrained && o.model !== undefined && !isModelName(o.model)
  ) {
    throw new UsageError(`unknown model '${o.model}' (known: ${MODEL_NAMES.join(", ")})`);
  }
  if (o.transform !== "eval" && o.transform !== "cifar") {
    throw new UsageError(`--transform must be eval or cifar, not '${o.transform}'`);
  }
  if (!["jet", "viridis", "gray"].includes(o.colormap)) {
    throw new UsageError(`--colormap must be jet, viridis or gray, not '${o.colormap}'`);
  }
  const alpha = o.alpha === undefined ? 0.5 : Number(o.alpha);
  if (!(alpha >= 0 && alpha <= 1)) {
    throw new UsageError(`--alpha must be a number in [0, 1], not '${o.alpha}'`);
  }
  if (o["fill-weights"] && o.weights !== undefined) {
    throw new UsageError("--fill-weights and --weights exclude each other");
  }
  if (o["fill-weights"] && o.model === undefined) throw new UsageError("--fill-weights needs --model");
  if (!o["fill-weights"] && !o.pretrained && o.weights === undefined) {
    throw new UsageError(
      "no weights: pass --weights <file.safetensors> (convert an official checkpoint with convert.ts), " +
        "--pretrained --model <name> for the authors' weights, or --fill-weights --model <name> for an offline demo with placeholder weights",
    );
  }
  if ((o.block !== undefined || o.rollout || o.alpha !== undefined) && o.attention === undefined) {
    throw new UsageError("--block, --rollout and --alpha only apply with --attention");
  }
  return {
    images: positionals,
    weights: o.weights,
    model: o.model,
    imgSize: o["img-size"] === undefined ? undefined : intOption("img-size", o["img-size"], 224, 16),
    fillWeights: o["fill-weights"],
    pretrained: o.pretrained,
    offline: o.offline,
    backend: o.backend as BackendName | undefined,
    engine: o.engine as "tfjs" | "onnxruntime",
    threads: o.threads === undefined ? undefined : intOption("threads", o.threads, 1, 1),
    topk: intOption("topk", o.topk, 5, 1),
    json: o.json,
    labels: o.labels,
    transform: o.transform,
    batch: intOption("batch", o.batch, 8, 1),
    attention: o.attention,
    block: intOption("block", o.block, -1, -Infinity),
    rollout: o.rollout,
    colormap: o.colormap as Colormap,
    alpha,
    features: o.features,
    force: o.force,
  };
}

/**
 * Builds the model the options ask for, through the zoo's loader (`createModel` / `loadModel`: the same
 * checkpoint filter as the library's).
 */
async function buildModel(o: Options): Promise<T2tVit> {
  if (o.fillWeights) {
    const model = await createModel(o.model as ModelName, { imgSize: o.imgSize });
    const tensors: TensorMap = new Map();
    for (const [key, t] of model.stateDict()) tensors.set(key, fromFloat32(fill(key, t.shape), [...t.shape]));
    model.loadStateDict(tensors, { file: "--fill-weights" });
    return model;
  }
  if (o.pretrained) {
    const w = resolvePretrained(o.model!);
    return await createModel(w.model, {
      pretrained: w.variant,
      imgSize: o.imgSize,
      hub: { offline: o.offline || undefined },
    });
  }
  if (o.model !== undefined) {
    return await createModel(o.model as ModelName, { weights: o.weights!, imgSize: o.imgSize });
  }
  try {
    return await loadModel(o.weights!, { imgSize: o.imgSize });
  } catch (e) {
    if (e instanceof ModelError && e.key === "architecture") {
      throw new ModelError("the weights do not name their architecture; pass --model", {
        file: e.file,
        key: e.key,
        cause: e,
      });
    }
    throw e;
  }
}

/** `out.png` for one image; `out-<name>.png` for each of several, made unique. */
function attentionPaths(base: string, files: string[]): string[] {
  if (files.length === 1) return [base];
  const dot = base.lastIndexOf(".");
  const slash = base.lastIndexOf("/");
  const [stem, ext] = dot > slash + 1 ? [base.slice(0, dot), base.slice(dot)] : [base, ".png"];
  const seen = new Map<string, number>();
  return files.map((f) => {
    const name = (f.split(/[\\/]/).pop() ?? f).replace(/\.[^.]*$/, "").replace(/[^\w.-]+/g, "_") || "image";
    const n = seen.get(name) ?? 0;
    seen.set(name, n + 1);
    return `${stem}-${name}${n ? `-${n}` : ""}${ext}`;
  });
}

interface Result {
  file: string;
  predictions?: Prediction[];
  attention?: string;
  error?: string;
}

function printResult(r: Result): void {
  if (!r.predictions) return;
  console.log(`${printable(r.file)}:`);
  for (const p of r.predictions) {
    console.log(`  ${(p.probability * 100).toFixed(2).padStart(6)}%  ${printable(p.label)}  [${p.index}]`);
  }
  if (r.attention) console.log(`  attention map: ${printable(r.attention)}`);
}

function oneLine(e: unknown): string {
  return printable((e instanceof Error ? e.message : String(e)).replace(/\s*\n\s*/g, " "));
}

/**
 * Runs the command with `args` (without the program name); returns the exit status.
 *
 * @example
 * ```ts ignore
 * import { main } from "./predict.ts";
 * const status = await main(["cat.jpg", "--weights", "t2t_vit_14.safetensors", "--json"]);
 * ```
 */
export async function main(args: string[]): Promise<number> {
  let o: Options;
  try {
    const p = parse(args);
    if (p === "help") {
      console.log(USAGE);
      return 0;
    }
    o = p;
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`error: ${printable(e.message)} (see --help)`);
      return 2;
    }
    throw e;
  }
  let model: T2tVit | undefined;
  let onnx: OnnxModel | undefined;
  try {
    if (o.backend || o.threads !== undefined) {
      await setBackend(o.backend, o.threads === undefined ? {} : { wasmThreads: o.threads });
    }
    if (o.fillWeights) {
      console.error(
        "warning: --fill-weights: deterministic placeholder weights, not a trained model; " +
          "the predicted classes are meaningless (this only shows the pipeline working)",
      );
    }
    model = await buildModel(o);
    if (o.engine === "onnxruntime") onnx = await OnnxModel.create(model);
    const numClasses = model.config.numClasses;
    let labels: readonly string[] | undefined = labelsFor(numClasses);
    if (o.labels !== undefined) {
      labels = await readLabels(o.labels);
      if (labels.length !== numClasses) {
        throw new T2tVitError(`has ${labels.length} names but the model has ${numClasses} classes`, {
          file: o.labels,
        });
      }
    }
    if (numClasses === 0) {
      throw new T2tVitError("the model has no classifier head (numClasses 0); use --features only");
    }
    const pre: Preprocess = modelPreprocess(model, o.transform);
    const attnPaths = o.attention ? attentionPaths(o.attention, o.images) : [];
    if (!o.force) {
      for (const p of [...attnPaths, ...(o.features ? [o.features] : [])]) {
        try {
          await Deno.lstat(p);
          throw new T2tVitError("already exists (use --force to overwrite)", { file: p });
        } catch (e) {
          if (!(e instanceof Deno.errors.NotFound)) throw e;
        }
      }
    }
    const results: Result[] = [];
    // the features of every image, one row each, written in place (no list of rows to join afterwards)
    const featureData = o.features ? new Float32Array(o.images.length * model.numFeatures) : undefined;
    const featureFiles: string[] = [];
    let failed = 0;
    // forwardWithAttention keeps every block's (B, heads, N, N) maps: bound a batch's maps to ~256 MB
    const perImageAttn = 4 * model.config.numHeads * (model.numPatches + 1) ** 2 * model.config.depth;
    const batch = o.attention ? Math.max(1, Math.min(o.batch, Math.floor(256e6 / perImageAttn))) : o.batch;
    for (let start = 0; start < o.images.length; start += batch) {
      const files = o.images.slice(start, start + batch);
      const ok: { index: number; tensor: Float32Array; image: RgbImage }[] = [];
      const batchResults: Result[] = [];
      for (const [i, file] of files.entries()) {
        try {
          const { tensor, image } = preprocessImage(await readImage(file), pre);
          ok.push({ index: i, tensor, image });
          batchResults.push({ file });
        } catch (e) {
          if (!(e instanceof T2tVitError)) throw e;
          failed++;
          console.error(`error: ${oneLine(e)}`);
          batchResults.push({ file, error: oneLine(e) });
        }
      }
      if (ok.length) {
        const [h, w] = pre.crop;
        const x = batchTensor(ok.map((v) => v.tensor), h, w);
        const owned: tf.Tensor[] = [x];
        try {
          let logits: tf.Tensor2D;
          let feats: tf.Tensor2D | undefined;
          if (o.attention) {
            const r = model.forwardWithAttention(x);
            owned.push(r.logits, ...r.attentions);
            logits = r.logits;
            const stacks = await attentionStacks(r.attentions);
            for (const [j, v] of ok.entries()) {
              const map = o.rollout
                ? attentionRollout(stacks[j], o.block)
                : classTokenAttention(stacks[j], o.block);
              const grid = Math.round(Math.sqrt(map.length));
              const overlay = renderAttention(v.image, map, {
                alpha: o.alpha,
                colormap: o.colormap,
                grid: [grid, grid],
              });
              const what = o.rollout ? "attention rollout up to" : "class-token attention of";
              const png = encodePng(overlay, {
                text: {
                  Software: "t2t-vit predict.ts",
                  Description: `${what} block ${o.block} of ${model.name}, averaged over heads`,
                  Source: files[v.index].replace(/[^\x20-\x7e]/g, "?"),
                },
              });
              const path = attnPaths[start + v.index];
              await writeFileAtomic(path, png, { force: o.force });
              batchResults[v.index].attention = path;
            }
            if (o.features) owned.push(feats = model.forwardFeatures(x));
          } else if (o.features) {
            // one pass: features, then the head on them (forward = head(forwardFeatures))
            owned.push(feats = onnx ? await onnx.forwardFeatures(x) : model.forwardFeatures(x));
            owned.push(logits = model.forwardHead(feats));
          } else {
            owned.push(logits = onnx ? await onnx.forward(x) : model.forward(x));
          }
          if (feats && featureData) {
            const values = await feats.data() as Float32Array;
            featureData.set(values, featureFiles.length * model.numFeatures);
            for (const v of ok) featureFiles.push(files[v.index]);
          }
          const values = await logits.data() as Float32Array;
          const c = logits.shape[1];
          for (const [j, v] of ok.entries()) {
            batchResults[v.index].predictions = topK(values.subarray(j * c, (j + 1) * c), o.topk, labels);
          }
        } finally {
          tf.dispose(owned);
        }
      }
      for (const r of batchResults) {
        results.push(r);
        if (!o.json) printResult(r);
      }
    }
    if (o.features && featureData && featureFiles.length) {
      const d = model.numFeatures;
      const rows = featureFiles.length;
      await writeSafetensors(
        o.features,
        new Map([["features", fromFloat32(featureData.subarray(0, rows * d), [rows, d])]]),
        {
          files: JSON.stringify(featureFiles),
          model: model.name,
          weights: o.weights ?? (o.pretrained ? resolvePretrained(o.model!).tag : "fill"),
          img_size: String(model.config.imgSize),
          preprocess: JSON.stringify(pre),
          what:
            "forward_features: the class token after the final LayerNorm, one row per image in 'files' order",
        },
        { force: o.force },
      );
      if (!o.json) console.log(`features: ${printable(o.features)} (${rows} x ${d})`);
    }
    if (o.json) {
      console.log(printableJson(
        {
          model: model.name,
          weights: o.weights ?? (o.pretrained ? resolvePretrained(o.model!).tag : null),
          fillWeights: o.fillWeights,
          backend: onnx ? "onnxruntime" : currentBackend() ?? null,
          imgSize: model.config.imgSize,
          numClasses,
          preprocess: pre,
          features: o.features && featureFiles.length ? o.features : null,
          results: results.map((r) =>
            r.error !== undefined ? { file: r.file, error: r.error } : {
              file: r.file,
              predictions: r.predictions,
              ...(r.attention ? { attention: r.attention } : {}),
            }
          ),
        },
      ));
    }
    return failed ? 1 : 0;
  } catch (e) {
    if (e instanceof T2tVitError) {
      console.error(`error: ${oneLine(e)}`);
      return 1;
    }
    console.error(`internal error: ${printable((e as Error)?.stack ?? String(e))}`);
    return 3;
  } finally {
    await onnx?.dispose();
    model?.dispose();
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
