/**
 * `export_onnx.ts`: write a T2T-ViT as an ONNX file (standard operators, opset 17 by default, dynamic batch,
 * PyTorch parameter names), checked by re-reading it and running it in ONNX Runtime before it takes its name.
 *
 * ```sh
 * deno run -A export_onnx.ts t2t_vit_14.safetensors                 # writes t2t_vit_14.onnx
 * deno run -A export_onnx.ts 81.5_T2T_ViT_14.pth.tar -o t2t14.onnx  # a PyTorch checkpoint works too
 * deno run -A export_onnx.ts --model t2t_vit_7 --fill-weights -o t2t_vit_7.onnx   # placeholder weights
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { decodeOnnxModel } from "./converters/onnx.ts";
import { fromFloat32 } from "./converters/safetensors.ts";
import type { TensorMap } from "./src/core/types.ts";
import { T2tVitError } from "./src/core/errors.ts";
import { fill, fillInput } from "./src/core/fill.ts";
import type { T2tVit } from "./zoo/model.ts";
import { createModel, loadModel, MODEL_NAMES, type ModelName, tf } from "./zoo/mod.ts";
import { exportOnnx, ONNX_OPSET_RANGE } from "./zoo/onnx_export.ts";
import { OnnxModel } from "./zoo/onnx_engine.ts";

/** The `--help` text. */
export const USAGE: string = `Usage: deno run -A export_onnx.ts <weights> [options]
       deno run -A export_onnx.ts --model <name> --fill-weights [options]

Writes a T2T-ViT as an ONNX file that ONNX Runtime (Python, C++, C#, Java, JavaScript) and other ONNX tools
run: standard operators only, the weights as initializers under their PyTorch names, input 'input'
(batch, 3, H, W) NCHW float32, outputs 'logits' and 'features', and metadata (architecture, img_size,
num_classes, config, preprocessing).

  <weights>               .safetensors (from convert.ts) or a PyTorch checkpoint (.pth, .pth.tar)
  -m, --model <name>      architecture: ${MODEL_NAMES.join(", ")};
                          default: the one the weights record
  --fill-weights          no weights: deterministic placeholder weights (tests, demos). Needs --model.
  --img-size <n>          input size, a multiple of 16 (default: the weights'; pos_embed is resized)
  --num-classes <n>       classes of the head (default: the weights'; another count drops the head)
  -o, --output <file>     output (default: the weights' name with .onnx, or <model>.onnx)
  --opset <n>             ONNX opset ${ONNX_OPSET_RANGE[0]}-${ONNX_OPSET_RANGE[1]} (default 17)
  --dtype <f32|f16>       storage type of the weights (default f32; f16 halves the file, computes in f32)
  --batch <n>             a fixed batch size instead of the dynamic batch axis
  --no-verify             skip the checks (by default the file is decoded, its initializers compared bit for
                          bit, and one image run in ONNX Runtime against the tfjs model before the rename)
  --force                 overwrite an existing output file
  -q, --quiet             no progress on stderr
  -h, --help              show this help

Exit status: 0 on success, 1 when the input is bad (one-line cause on stderr), 2 on a usage error,
3 on an internal error.`;

class UsageError extends Error {}

interface Options {
  weights?: string;
  model?: ModelName;
  fillWeights: boolean;
  imgSize?: number;
  numClasses?: number;
  output: string;
  opset: number;
  dtype: "f32" | "f16";
  batch?: number;
  verify: boolean;
  force: boolean;
  quiet: boolean;
}

function intOption(name: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min) {
    throw new UsageError(`--${name} must be an integer >= ${min}, not '${v}'`);
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
        model: { type: "string", short: "m" },
        "fill-weights": { type: "boolean", default: false },
        "img-size": { type: "string" },
        "num-classes": { type: "string" },
        output: { type: "string", short: "o" },
        opset: { type: "string" },
        dtype: { type: "string", default: "f32" },
        batch: { type: "string" },
        "no-verify": { type: "boolean", default: false },
        force: { type: "boolean", default: false },
        quiet: { type: "boolean", short: "q", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (e) {
    throw new UsageError((e as Error).message.split("\n")[0]);
  }
  const { values: o, positionals } = parsed;
  if (o.help) return "help";
  if (positionals.length > 1) throw new UsageError(`one weights file at most, got ${positionals.length}`);
  const weights = positionals[0];
  if (o.model !== undefined && !(MODEL_NAMES as readonly string[]).includes(o.model)) {
    throw new UsageError(`unknown architecture '${o.model}' (known: ${MODEL_NAMES.join(", ")})`);
  }
  if (o["fill-weights"] && weights !== undefined) {
    throw new UsageError("--fill-weights and <weights> exclude each other");
  }
  if (o["fill-weights"] && o.model === undefined) throw new UsageError("--fill-weights needs --model");
  if (!o["fill-weights"] && weights === undefined) {
    throw new UsageError("no weights: pass <weights.safetensors>, or --model <name> --fill-weights");
  }
  const imgSize = intOption("img-size", o["img-size"], 16);
  if (imgSize !== undefined && imgSize % 16 !== 0) {
    throw new UsageError(`--img-size must be a multiple of 16, not ${imgSize}`);
  }
  const opset = intOption("opset", o.opset, 1) ?? 17;
  if (opset < ONNX_OPSET_RANGE[0] || opset > ONNX_OPSET_RANGE[1]) {
    throw new UsageError(
      `--opset must be from ${ONNX_OPSET_RANGE[0]} to ${ONNX_OPSET_RANGE[1]}, not ${opset}`,
    );
  }
  if (o.dtype !== "f32" && o.dtype !== "f16") {
    throw new UsageError(`--dtype must be f32 or f16, not '${o.dtype}'`);
  }
  const stem = weights !== undefined
    ? weights.replace(/\.(safetensors|pth\.tar|pth|pt|bin|tar|ckpt)$/i, "")
    : `${o.model}${imgSize && imgSize !== 224 ? `_${imgSize}` : ""}`;
  return {
    weights,
    model: o.model as ModelName | undefined,
    fillWeights: o["fill-weights"],
    imgSize,
    numClasses: intOption("num-classes", o["num-classes"], 0),
    output: o.output ?? `${stem}.onnx`,
    opset,
    dtype: o.dtype,
    batch: intOption("batch", o.batch, 1),
    verify: !o["no-verify"],
    force: o.force,
    quiet: o.quiet,
  };
}

async function buildModel(o: Options): Promise<T2tVit> {
  const size = { imgSize: o.imgSize, numClasses: o.numClasses };
  if (o.fillWeights) {
    const model = await createModel(o.model!, size);
    const tensors: TensorMap = new Map();
    for (const [key, t] of model.stateDict()) tensors.set(key, fromFloat32(fill(key, t.shape), [...t.shape]));
    model.loadStateDict(tensors, { file: "--fill-weights" });
    return model;
  }
  if (o.model) return await createModel(o.model, { ...size, weights: o.weights });
  return await loadModel(o.weights!, size);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Decodes the written file, compares its initializers with the model's weights, runs one image in the tfjs
 * model and then (the model disposed) in ONNX Runtime, and compares the logits.
 */
async function verify(path: string, model: T2tVit, o: Options, log: (s: string) => void): Promise<void> {
  const bytes = await Deno.readFile(path);
  const decoded = decodeOnnxModel(bytes, path);
  const sd = model.stateDict();
  const inits = new Map(decoded.graph.initializers.map((t) => [t.name, t]));
  if (inits.size !== sd.size) {
    throw new T2tVitError(`the file has ${inits.size} initializers, the model ${sd.size} weights`, {
      file: path,
    });
  }
  for (const [key, t] of sd) {
    const init = inits.get(key);
    if (!init) throw new T2tVitError("weight missing from the written file", { file: path, key });
    if (init.dims.join() !== t.shape.join()) {
      throw new T2tVitError(`shape [${init.dims}] in the file, [${t.shape}] in the model`, {
        file: path,
        key,
      });
    }
    if (o.dtype === "f32") {
      const v = t.dataSync() as Float32Array;
      if (!sameBytes(init.data, new Uint8Array(v.buffer, v.byteOffset, v.byteLength))) {
        throw new T2tVitError("the written values differ from the model's", { file: path, key });
      }
    }
  }
  log(`verify: ${sd.size} initializers match; running one image in the tfjs model and in ONNX Runtime`);
  const c = model.config;
  const batch = o.batch ?? 1;
  const input = fillInput(batch, c.imgSize, c.inChans);
  const want = tf.tidy(() => model.forward(tf.tensor4d(input, [batch, c.inChans, c.imgSize, c.imgSize])));
  const ref = await want.data() as Float32Array;
  want.dispose();
  // the tfjs model is done with: free it before ONNX Runtime loads its copy of the weights
  model.dispose();
  const onnx = await OnnxModel.create(bytes);
  try {
    const got = (await onnx.run(input, batch)).logits;
    let diff = 0, scale = 1;
    for (let i = 0; i < ref.length; i++) {
      diff = Math.max(diff, Math.abs(got[i] - ref[i]));
      scale = Math.max(scale, Math.abs(ref[i]));
    }
    // float32 export: a few 1e-6 apart; float16 weights move logits by ~1e-3 of their scale
    const tol = (o.dtype === "f16" ? 5e-2 : 1e-3) * scale;
    if (!(diff <= tol)) {
      throw new T2tVitError(`ONNX Runtime's logits differ from the tfjs model's by ${diff} (bound ${tol})`, {
        file: path,
      });
    }
    log(`verify: ONNX Runtime's logits within ${diff.toExponential(2)} of the tfjs model's`);
  } finally {
    await onnx.dispose();
  }
}

/**
 * Runs the command with `args` (without the program name); returns the exit status.
 *
 * @example
 * ```ts ignore
 * import { main } from "./export_onnx.ts";
 * const status = await main(["--model", "t2t_vit_7", "--fill-weights", "-o", "t2t_vit_7.onnx"]);
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
      console.error(`error: ${e.message} (see --help)`);
      return 2;
    }
    throw e;
  }
  const log = (s: string) => {
    if (!o.quiet) console.error(s);
  };
  let model: T2tVit | undefined;
  let tmp: string | undefined;
  const cleanup = () => {
    if (tmp) {
      try {
        Deno.removeSync(tmp);
      } catch { /* already gone */ }
    }
  };
  const onSignal = () => {
    cleanup();
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  try {
    if (!o.force) {
      try {
        await Deno.lstat(o.output);
        throw new T2tVitError("already exists (use --force to overwrite)", { file: o.output });
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
    }
    const t0 = performance.now();
    log(`loading ${o.fillWeights ? `${o.model} with placeholder weights` : o.weights}`);
    model = await buildModel(o);
    let bytes: Uint8Array | undefined = exportOnnx(model, {
      opset: o.opset,
      dtype: o.dtype,
      dynamicBatch: o.batch === undefined,
      batchSize: o.batch,
    });
    log(
      `exported ${model.name} (${model.config.imgSize}x${model.config.imgSize}, ${model.config.numClasses} classes, opset ${o.opset}, ${o.dtype}): ${
        (bytes.length / 1e6).toFixed(1)
      } MB`,
    );
    tmp = `${o.output}.${crypto.randomUUID().slice(0, 8)}.tmp`;
    try {
      await Deno.writeFile(tmp, bytes, { createNew: true });
    } catch (e) {
      throw new T2tVitError(`cannot write: ${(e as Error).message}`, { file: o.output, cause: e });
    }
    bytes = undefined; // the check reads the file back
    if (o.verify) await verify(tmp, model, o, log);
    await Deno.rename(tmp, o.output);
    tmp = undefined;
    log(`wrote ${o.output} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    console.log(o.output);
    return 0;
  } catch (e) {
    cleanup();
    if (e instanceof T2tVitError) {
      console.error(`error: ${e.message.replace(/\s*\n\s*/g, " ")}`);
      return 1;
    }
    console.error(`internal error: ${(e as Error)?.stack ?? String(e)}`);
    return 3;
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    model?.dispose();
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
