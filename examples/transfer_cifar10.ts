/**
 * Fine-tunes a T2T-ViT on CIFAR-10 or CIFAR-100 as the authors' `transfer_learning.py` does: same defaults
 * (T2T-ViT-14, 224 px, batch 128, SGD with momentum 0.9, lr 0.01, weight decay 5e-4, the backbone at
 * `transfer_ratio * lr`, cosine annealing to 2e-4 over 60 epochs stepped per epoch, drop-path 0.1), the same
 * transforms, evaluation after every epoch, and the best weights kept.
 *
 * ```sh
 * deno task transfer --data ./data --weights t2t_vit_14.safetensors            # CIFAR-10, official recipe
 * deno task transfer --dataset cifar100 --model t2t_vit_7 --img-size 160 --b 64 --backend webgpu
 * deno task transfer --out runs/c10 --resume                                    # continue runs/c10/last
 * ```
 *
 * Data: the binary CIFAR archives extracted under `--data` (`cifar-10-batches-bin/` or `cifar-100-binary/`).
 * Outputs in `--out` (default `checkpoint_<dataset>_<model>`): `last.safetensors` + `last.optim.safetensors`
 * (resumable, every epoch), `best.safetensors` (weights under the official names, loadable by the official
 * code's `load_state_dict` and by our `createModel`), and `log.jsonl` (one JSON line per epoch).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { createModel, MODEL_NAMES, type ModelName, setBackend } from "../zoo/mod.ts";
import { wasmThreadsCount } from "../zoo/kernels/wasm_threads.ts";
import { T2tVitError } from "../src/core/errors.ts";
import { writeFileAtomic } from "../src/core/atomic.ts";
import {
  AdamW,
  type AdamWOptions,
  CosineSchedule,
  estimateStepMemory,
  evaluate,
  extractFeatures,
  fileDigest,
  formatDuration,
  loadCheckpoint,
  type Optimizer,
  type ParamGroupSpec,
  planEvalBatch,
  probeEpoch,
  probeEvaluate,
  ProgressBar,
  readTrainingState,
  saveCheckpoint,
  saveWeights,
  SGD,
  type SgdOptions,
  type TrainableModel,
  Trainer,
  transferParamGroups,
  weightDecayParamGroups,
} from "../src/train/mod.ts";
import {
  cifarBatches,
  type CifarName,
  type CifarSplit,
  numBatches,
  readCifar,
  type ResizeMode,
} from "../src/data/mod.ts";

const HELP = `Fine-tune a T2T-ViT on CIFAR-10/100 (the official transfer_learning.py recipe).

Usage: deno task transfer [options]

Model and data
  --model NAME            model (default t2t_vit_14; ${MODEL_NAMES.length} official names, case-insensitive)
  --weights FILE          converted safetensors to start from (alias --transfer-model); a head of another
                          class count is dropped as the official loader does. Without it: from scratch.
  --dataset NAME          cifar10 | cifar100 (default cifar10)
  --data DIR              folder holding the binary CIFAR archive, extracted (default ./data)
  --img-size N            input size, a multiple of 16 (default 224)
  --any-count             accept data files with any number of records (subsets, own data in CIFAR format)
  --limit-train N         use only N training images (quick runs)
  --limit-test N          evaluate on only N test images
Optimisation
  --b N                   batch size (alias --batch-size; default 128)
  --micro-batch N|auto    accumulate gradients over chunks of N images (same update, less memory); default
                          auto: the largest chunk whose step fits the backend's memory (estimated from the
                          model, image size and batch; reported at start; refused up front if none fits)
  --freeze-backbone       linear probe: run the backbone once per image (eval transform; the training
                          augmentation does not apply), cache the features in <out>/features, train the head
  --checkpoint-blocks     recompute each block's activations in the backward pass: same gradients, far less
                          memory per image (larger micro-batches), about a third more compute (default:
                          only when a step would not fit otherwise)
  --test-batch N          evaluation batch size (default 100)
  --lr X                  learning rate of the head (default 0.01)
  --transfer-ratio X      backbone lr = X * lr when fine-tuning (default 0.01); as in the official script,
                          cls_token and the final norm are not in the optimizer when fine-tuning
  --wd X                  weight decay (default 5e-4)
  --min-lr X              cosine floor (default 2e-4)
  --epochs N              epochs = cosine length T_max (default 60)
  --warmup-epochs N       linear warmup epochs (default 0)
  --warmup-lr X           warmup start lr (default 1e-6)
  --opt sgd|adamw         optimizer (default sgd, momentum 0.9; adamw: timm's no-decay groups)
  --momentum X            SGD momentum (default 0.9)
  --smoothing X           label smoothing (default 0)
  --clip-grad X           clip gradients to this global norm (default off)
  --drop X                dropout rate (default 0)
  --drop-path X           drop-path rate (default 0.1)
  --train-resize MODE     tensor | pillow: how training images are resized (default tensor)
Run
  --backend NAME          webgpu | wasm | cpu (default: the best available)
  --threads N             wasm threads (default: every core, ${navigator.hardwareConcurrency || 1} here)
  --seed N                seed of shuffling, augmentation and dropout (default 0)
  --out DIR               output folder (default checkpoint_<dataset>_<model>)
  --resume                continue from <out>/last.safetensors with every setting of that run (model, data,
                          image size, schedule, batch, seed...); a flag that would change the run is refused
                          unless named in --change
  --stop-after N          stop after N epochs in this invocation (the run stays resumable with --resume)
  --change FLAGS          with --resume: settings meant to change, comma-separated (e.g. --change epochs)
  -h, --help              this help
`;

/** A usage error: one line on stderr, exit code 2. */
class UsageError extends Error {}

function num(
  v: string | undefined,
  name: string,
  def: number,
  opts: { int?: boolean; min?: number } = {},
): number {
  if (v === undefined) return def;
  const x = Number(v);
  if (!Number.isFinite(x) || (opts.int && !Number.isInteger(x)) || (opts.min !== undefined && x < opts.min)) {
    throw new UsageError(
      `--${name} expects ${opts.int ? "an integer" : "a number"}${
        opts.min !== undefined ? ` >= ${opts.min}` : ""
      }, got '${v}'`,
    );
  }
  return x;
}

function parse(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      model: { type: "string" },
      weights: { type: "string" },
      "transfer-model": { type: "string" },
      dataset: { type: "string" },
      data: { type: "string" },
      "img-size": { type: "string" },
      "any-count": { type: "boolean" },
      "limit-train": { type: "string" },
      "limit-test": { type: "string" },
      b: { type: "string" },
      "batch-size": { type: "string" },
      "test-batch": { type: "string" },
      "micro-batch": { type: "string" },
      "checkpoint-blocks": { type: "boolean" },
      "freeze-backbone": { type: "boolean" },
      lr: { type: "string" },
      "transfer-ratio": { type: "string" },
      wd: { type: "string" },
      "min-lr": { type: "string" },
      epochs: { type: "string" },
      "warmup-epochs": { type: "string" },
      "warmup-lr": { type: "string" },
      opt: { type: "string" },
      momentum: { type: "string" },
      smoothing: { type: "string" },
      "clip-grad": { type: "string" },
      drop: { type: "string" },
      "drop-path": { type: "string" },
      "train-resize": { type: "string" },
      backend: { type: "string" },
      threads: { type: "string" },
      change: { type: "string" },
      "stop-after": { type: "string" },
      seed: { type: "string" },
      out: { type: "string" },
      resume: { type: "boolean", short: "r" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return undefined;
  const given = new Set<string>(
    Object.entries(values).filter(([, v]) => v !== undefined).map(([k]) =>
      k === "transfer-model" ? "weights" : k === "batch-size" ? "b" : k
    ),
  );
  const model = (values.model ?? "t2t_vit_14").toLowerCase() as ModelName;
  if (!MODEL_NAMES.includes(model)) {
    throw new UsageError(`unknown model '${values.model}' (one of ${MODEL_NAMES.join(", ")})`);
  }
  const dataset = (values.dataset ?? "cifar10").toLowerCase();
  if (dataset !== "cifar10" && dataset !== "cifar100") {
    throw new UsageError(`--dataset must be cifar10 or cifar100, got '${values.dataset}'`);
  }
  const opt = values.opt ?? "sgd";
  if (opt !== "sgd" && opt !== "adamw") throw new UsageError(`--opt must be sgd or adamw, got '${opt}'`);
  const trainResize = values["train-resize"] ?? "tensor";
  if (trainResize !== "tensor" && trainResize !== "pillow") {
    throw new UsageError(`--train-resize must be tensor or pillow, got '${trainResize}'`);
  }
  const backend = values.backend;
  if (backend !== undefined && !["webgpu", "wasm", "cpu"].includes(backend)) {
    throw new UsageError(`--backend must be webgpu, wasm or cpu, got '${backend}'`);
  }
  const imgSize = num(values["img-size"], "img-size", 224, { int: true, min: 16 });
  if (imgSize % 16 !== 0) throw new UsageError(`--img-size must be a multiple of 16, got ${imgSize}`);
  const limit = (k: "limit-train" | "limit-test") =>
    values[k] === undefined ? undefined : num(values[k], k, 0, { int: true, min: 1 });
  return {
    model,
    weights: values.weights ?? values["transfer-model"],
    dataset: dataset as CifarName,
    data: values.data ?? "./data",
    imgSize,
    anyCount: values["any-count"] ?? false,
    limitTrain: limit("limit-train"),
    limitTest: limit("limit-test"),
    b: num(values.b ?? values["batch-size"], "b", 128, { int: true, min: 1 }),
    testBatch: num(values["test-batch"], "test-batch", 100, { int: true, min: 1 }),
    microBatch: values["micro-batch"] === undefined || values["micro-batch"] === "auto"
      ? "auto" as const
      : num(values["micro-batch"], "micro-batch", 0, { int: true, min: 1 }),
    checkpointBlocks: values["checkpoint-blocks"] ? true : "auto" as const,
    freezeBackbone: values["freeze-backbone"] ?? false,
    lr: num(values.lr, "lr", 0.01, { min: 0 }),
    transferRatio: num(values["transfer-ratio"], "transfer-ratio", 0.01, { min: 0 }),
    wd: num(values.wd, "wd", 5e-4, { min: 0 }),
    minLr: num(values["min-lr"], "min-lr", 2e-4, { min: 0 }),
    epochs: num(values.epochs, "epochs", 60, { int: true, min: 1 }),
    warmupEpochs: num(values["warmup-epochs"], "warmup-epochs", 0, { int: true, min: 0 }),
    warmupLr: num(values["warmup-lr"], "warmup-lr", 1e-6, { min: 0 }),
    opt: opt as "sgd" | "adamw",
    momentum: num(values.momentum, "momentum", 0.9, { min: 0 }),
    smoothing: num(values.smoothing, "smoothing", 0, { min: 0 }),
    clipGrad: values["clip-grad"] === undefined
      ? undefined
      : num(values["clip-grad"], "clip-grad", 0, { min: 0 }),
    drop: num(values.drop, "drop", 0, { min: 0 }),
    dropPath: num(values["drop-path"], "drop-path", 0.1, { min: 0 }),
    trainResize: trainResize as ResizeMode,
    backend: backend as "webgpu" | "wasm" | "cpu" | undefined,
    seed: num(values.seed, "seed", 0, { int: true, min: 0 }),
    out: values.out ?? `checkpoint_${dataset}_${model}`,
    resume: values.resume ?? false,
    threads: values.threads === undefined
      ? undefined
      : num(values.threads, "threads", 1, { int: true, min: 1 }),
    stopAfter: values["stop-after"] === undefined
      ? Infinity
      : num(values["stop-after"], "stop-after", 1, { int: true, min: 1 }),
    change: new Set(
      (values.change ?? "").split(",").map((c) => c.trim().replace(/^--/, "")).filter((c) => c),
    ),
    given,
  };
}

/** The settings a run is made of, by flag name: restored by --resume, changed only when named in --change. */
const RUN_SETTINGS = {
  model: "model",
  weights: "weights",
  dataset: "dataset",
  data: "data",
  "img-size": "imgSize",
  "any-count": "anyCount",
  "limit-train": "limitTrain",
  "limit-test": "limitTest",
  b: "b",
  lr: "lr",
  "transfer-ratio": "transferRatio",
  wd: "wd",
  "min-lr": "minLr",
  epochs: "epochs",
  "warmup-epochs": "warmupEpochs",
  "warmup-lr": "warmupLr",
  opt: "opt",
  momentum: "momentum",
  smoothing: "smoothing",
  "clip-grad": "clipGrad",
  drop: "drop",
  "drop-path": "dropPath",
  "train-resize": "trainResize",
  seed: "seed",
} as const;

type Args = NonNullable<ReturnType<typeof parse>>;

/** The optimizer of the run: the transfer groups when fine-tuning, every parameter otherwise. */
function buildOptimizer(model: TrainableModel, a: Args, transfer: boolean): Optimizer<object> {
  const params = model.trainableVariables();
  if (a.opt === "sgd") {
    const groups: ParamGroupSpec<SgdOptions>[] = transfer
      ? transferParamGroups(params, { lr: a.lr, transferRatio: a.transferRatio })
      : [{ name: "all", params }];
    return new SGD(groups, { lr: a.lr, momentum: a.momentum, weightDecay: a.wd });
  }
  // AdamW: timm's decay / no-decay split, inside each transfer group.
  const base: ParamGroupSpec<AdamWOptions>[] = transfer
    ? transferParamGroups(params, { lr: a.lr, transferRatio: a.transferRatio })
    : [{ name: "all", params }];
  const groups = base.flatMap((g) =>
    weightDecayParamGroups<AdamWOptions>(new Map(g.params), a.wd).map((s) => ({
      ...s,
      name: `${g.name}.${s.name}`,
      lr: g.lr,
    }))
  );
  return new AdamW(groups, { lr: a.lr, weightDecay: a.wd });
}

interface LogLine {
  epoch: number;
  lr: number[];
  train_loss: number;
  train_acc: number;
  test_loss: number;
  test_acc: number;
  best_acc: number;
  images_per_s: number;
  seconds: number;
  step: number;
}

async function readLog(path: string, before: number): Promise<LogLine[]> {
  try {
    const text = await Deno.readTextFile(path);
    return text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l) as LogLine).filter((l) =>
      l.epoch < before
    );
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/**
 * --resume: every setting of the run comes from the checkpoint; a flag given now that differs is refused
 * unless named in --change. Checkpoints from before settings were saved are read through their command line.
 */
function restoreSettings(a: Args, extra: Record<string, unknown>, file: string): void {
  let saved = extra.settings as Record<string, unknown> | undefined;
  if (!saved && Array.isArray(extra.args)) {
    const old = parse((extra.args as string[]).filter((x) => x !== "--resume" && x !== "-r"));
    if (old) saved = Object.fromEntries(Object.entries(RUN_SETTINGS).map(([f, k]) => [f, old[k] ?? null]));
  }
  if (!saved) {
    throw new T2tVitError(`${file}: the checkpoint does not record the run's settings; cannot resume`);
  }
  const refused: string[] = [];
  const target = a as unknown as Record<string, unknown>;
  for (const [flag, field] of Object.entries(RUN_SETTINGS)) {
    if (!(flag in saved)) continue;
    const was = saved[flag] ?? undefined;
    const now = target[field];
    if (a.given.has(flag) && now !== was) {
      if (a.change.has(flag)) continue; // intended: keep the new value
      refused.push(`--${flag} ${now} (the run has ${was ?? "none"})`);
      continue;
    }
    target[field] = was;
  }
  if (refused.length) {
    throw new UsageError(
      `--resume continues the run in ${a.out} with its own settings; these flags would change it: ${
        refused.join(", ")
      }. Leave them out, or name them in --change (e.g. --change ${
        refused.map((r) => r.slice(2, r.indexOf(" "))).join(",")
      }) if the change is intended`,
    );
  }
}

/**
 * --freeze-backbone: features once per image at the eval transform (cached), then the head alone, with the
 * run's optimizer settings and schedule. Writes best.safetensors (the whole model, trained head) and log.jsonl.
 */
async function linearProbe(
  a: Args,
  model: Awaited<ReturnType<typeof createModel>>,
  train: CifarSplit,
  test: CifarSplit,
  schedule: CosineSchedule,
): Promise<number> {
  const say = (s: string) => console.error(s);
  const vars = model.trainableVariables();
  const head = { weight: vars.get("head.weight")!, bias: vars.get("head.bias")! };
  const params = new Map([["head.weight", head.weight], ["head.bias", head.bias]]);
  const optimizer: Optimizer<object> = a.opt === "sgd"
    ? new SGD([{ name: "head", params }], { lr: a.lr, momentum: a.momentum, weightDecay: a.wd })
    : new AdamW([{ name: "head", params }], { lr: a.lr, weightDecay: a.wd });
  const key = {
    model: a.model,
    weights: a.weights ? await fileDigest(a.weights) : "official-init-seed-0",
    imgSize: a.imgSize,
  };
  const cacheDir = `${a.out}/features`;
  const t0 = performance.now();
  const sets = [];
  for (const [split, limit] of [[train, a.limitTrain], [test, a.limitTest]] as const) {
    const n = Math.min(split.count, limit ?? Infinity);
    const bar = new ProgressBar({ label: `features ${split.split}`, total: numBatches(n, a.testBatch) });
    const set = await extractFeatures(model, split, {
      key,
      imgSize: a.imgSize,
      batchSize: a.testBatch,
      limit,
      cacheDir,
      onBatch: (done) => bar.update(done, { items: Math.min(n, done * a.testBatch) }),
    });
    bar.done();
    say(`==> ${split.split} features: ${set.count} x ${set.dim}${set.cached ? " (cached)" : ""}`);
    sets.push(set);
  }
  const [trainSet, testSet] = sets;
  const featureSeconds = (performance.now() - t0) / 1000;
  await Deno.mkdir(a.out, { recursive: true });
  const log: LogLine[] = [];
  let best = -1;
  const t1 = performance.now();
  for (let epoch = 0; epoch < Math.min(a.epochs, a.stopAfter); epoch++) {
    const lrs = schedule.apply(optimizer, epoch);
    const tr = await probeEpoch(head, optimizer, trainSet, {
      batchSize: a.b,
      seed: a.seed,
      epoch,
      labelSmoothing: a.smoothing,
    });
    const ev = await probeEvaluate(head, testSet);
    const improved = ev.accuracy > best;
    if (improved) {
      best = ev.accuracy;
      await saveWeights(`${a.out}/best.safetensors`, model, {
        architecture: a.model,
        dataset: a.dataset,
        epoch: String(epoch),
        acc: (100 * ev.accuracy).toFixed(3),
        probe: "linear (frozen backbone)",
      });
    }
    log.push({
      epoch,
      lr: lrs,
      train_loss: tr.loss,
      train_acc: tr.accuracy,
      test_loss: ev.loss,
      test_acc: ev.accuracy,
      best_acc: best,
      images_per_s: 0,
      seconds: (performance.now() - t1) / 1000,
      step: optimizer.steps,
    });
  }
  await writeFileAtomic(
    `${a.out}/log.jsonl`,
    new TextEncoder().encode(log.map((l) => JSON.stringify(l)).join("\n") + "\n"),
    { force: true },
  );
  const last = log[log.length - 1];
  say(
    `==> linear probe: ${log.length} epochs in ${((performance.now() - t1) / 1000).toFixed(1)} s (features ${
      featureSeconds.toFixed(1)
    } s): train ${(100 * last.train_acc).toFixed(2)}%, test ${(100 * last.test_acc).toFixed(2)}%, best ${
      (100 * best).toFixed(2)
    }% in ${a.out}/best.safetensors`,
  );
  optimizer.dispose();
  model.dispose();
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const a = parse(argv);
  if (!a) {
    console.log(HELP);
    return 0;
  }
  const say = (s: string) => console.error(s);
  const lastPath = `${a.out}/last.safetensors`;
  let resumed: Awaited<ReturnType<typeof readTrainingState>> | undefined;
  if (a.change.size && !a.resume) throw new UsageError("--change only applies with --resume");
  if (a.freezeBackbone && a.resume) {
    throw new UsageError(
      "--freeze-backbone trains in seconds from cached features: run it again, without --resume",
    );
  }
  for (const c of a.change) {
    if (!(c in RUN_SETTINGS)) {
      throw new UsageError(
        `--change ${c}: not a setting of the run (${Object.keys(RUN_SETTINGS).join(", ")})`,
      );
    }
  }
  if (a.resume) {
    resumed = await readTrainingState(lastPath);
    restoreSettings(a, resumed.training.extra ?? {}, lastPath);
  }
  const transfer = resumed ? Boolean(resumed.training.extra?.transfer) : a.weights !== undefined;
  const seed = a.seed;
  if (resumed && resumed.training.epoch >= a.epochs) {
    say(
      `==> the run in ${a.out} has finished: ${resumed.training.epoch} of ${a.epochs} epochs, best ${
        (100 * (resumed.training.bestAccuracy ?? 0)).toFixed(2)
      }% (${a.out}/best.safetensors); nothing to do. To train longer: --resume --epochs N --change epochs`,
    );
    return 0;
  }

  const train = await readCifar(a.data, a.dataset, "train", { strictCounts: !a.anyCount });
  const test = await readCifar(a.data, a.dataset, "test", { strictCounts: !a.anyCount });
  const backend = await setBackend(a.backend, a.threads === undefined ? {} : { wasmThreads: a.threads });
  const threads = backend === "wasm" ? `, ${wasmThreadsCount()} thread(s)` : "";
  say(`==> ${a.dataset}: ${train.count} train / ${test.count} test images, backend ${backend}${threads}`);

  const model = await createModel(a.model, {
    weights: resumed ? undefined : a.weights,
    numClasses: train.numClasses,
    imgSize: a.imgSize,
    dropRate: a.drop,
    dropPathRate: a.dropPath,
  });
  const schedule = new CosineSchedule({
    tInitial: a.epochs,
    lrMin: a.minLr,
    warmupT: a.warmupEpochs,
    warmupLrInit: a.warmupLr,
  });
  // an eval-mode forward of --test-batch images must fit too (tfjs holds a forward's intermediates to its end)
  let params = 0;
  for (const t of model.stateDict().values()) params += t.size;
  const evalBatch = planEvalBatch(
    estimateStepMemory(model.config, params, { imgSize: a.imgSize }),
    a.testBatch,
    a.imgSize,
  );
  if (evalBatch < a.testBatch) {
    say(
      `==> evaluation in batches of ${evalBatch}: --test-batch ${a.testBatch} would not fit the ${backend} backend`,
    );
    a.testBatch = evalBatch;
  }
  if (a.freezeBackbone) return await linearProbe(a, model, train, test, schedule);
  const optimizer = buildOptimizer(model, a, transfer);
  let startEpoch = 0, best = -1; // the first evaluation is always kept as best.safetensors
  if (resumed) {
    const st = await loadCheckpoint(lastPath, model, optimizer);
    startEpoch = st.epoch;
    best = st.bestAccuracy ?? -1;
    say(
      `==> resumed from ${lastPath}: epoch ${startEpoch}, step ${st.globalStep}, best ${
        (100 * best).toFixed(2)
      }%`,
    );
  } else if (transfer) {
    say(
      `==> fine-tuning ${a.model} from ${a.weights}: tokens_to_token and blocks at ${a.transferRatio} x lr`,
    );
  } else {
    say(`==> training ${a.model} from scratch`);
  }
  const trainer = new Trainer(model, optimizer, {
    seed,
    schedule,
    labelSmoothing: a.smoothing,
    clipGradNorm: a.clipGrad,
    microBatch: a.microBatch,
    checkpointBlocks: a.checkpointBlocks,
  });
  const plan = trainer.plan(Math.min(a.b, Math.min(train.count, a.limitTrain ?? Infinity)), a.imgSize);
  if (plan) say(`==> memory: ${plan.summary}`);
  await Deno.mkdir(a.out, { recursive: true });
  const logPath = `${a.out}/log.jsonl`;
  const log = await readLog(logPath, startEpoch);
  const nTrain = Math.min(train.count, a.limitTrain ?? Infinity);
  const nTest = Math.min(test.count, a.limitTest ?? Infinity);
  const runStart = performance.now();

  const endEpoch = Math.min(a.epochs, startEpoch + a.stopAfter);
  for (let epoch = startEpoch; epoch < endEpoch; epoch++) {
    const lrs = trainer.startEpoch(epoch);
    const steps = numBatches(nTrain, a.b);
    const bar = new ProgressBar({ label: `epoch ${epoch} train`, total: steps });
    let lossSum = 0, correct = 0, seen = 0, done = 0;
    for (
      const { x, labels } of cifarBatches(train, {
        batchSize: a.b,
        imgSize: a.imgSize,
        train: true,
        seed,
        epoch,
        limit: a.limitTrain,
        resize: a.trainResize,
      })
    ) {
      try {
        const r = await trainer.trainStep(x, labels);
        if (!Number.isFinite(r.loss)) {
          throw new T2tVitError(`loss became ${r.loss} at step ${trainer.globalStep}`);
        }
        lossSum += r.loss * r.count;
        correct += r.correct;
        seen += r.count;
      } finally {
        x.dispose();
      }
      done++;
      bar.update(done, {
        items: seen,
        info: `loss ${(lossSum / seen).toFixed(3)} acc ${((100 * correct) / seen).toFixed(2)}%`,
      });
    }
    const trainSeconds = bar.elapsed;
    bar.done();
    const evalBar = new ProgressBar({ label: `epoch ${epoch} test `, total: numBatches(nTest, a.testBatch) });
    let evalBatches = 0;
    const ev = await evaluate(
      model,
      cifarBatches(test, { batchSize: a.testBatch, imgSize: a.imgSize, train: false, limit: a.limitTest }),
      (n, r) =>
        evalBar.update(++evalBatches, {
          items: n,
          info: `loss ${r.loss.toFixed(3)} acc ${(100 * r.accuracy).toFixed(2)}%`,
        }),
    );
    evalBar.done();
    const bestPath = `${a.out}/best.safetensors`;
    const improved = ev.accuracy > best || !(await exists(bestPath));
    if (improved) {
      best = Math.max(best, ev.accuracy);
      await saveWeights(bestPath, model, {
        architecture: a.model,
        dataset: a.dataset,
        epoch: String(epoch),
        acc: (100 * ev.accuracy).toFixed(3),
      });
    }
    await saveCheckpoint(lastPath, model, optimizer, {
      epoch: epoch + 1,
      bestAccuracy: best,
      seed,
      schedule: schedule.toJSON(),
      extra: {
        transfer,
        model: a.model,
        dataset: a.dataset,
        imgSize: a.imgSize,
        args: argv,
        settings: Object.fromEntries(
          Object.entries(RUN_SETTINGS).map(([flag, field]) => [flag, a[field] ?? null]),
        ),
      },
    }, { architecture: a.model, dataset: a.dataset });
    const line: LogLine = {
      epoch,
      lr: lrs,
      train_loss: lossSum / seen,
      train_acc: correct / seen,
      test_loss: ev.loss,
      test_acc: ev.accuracy,
      best_acc: best,
      images_per_s: seen / trainSeconds,
      seconds: trainSeconds,
      step: trainer.globalStep,
    };
    log.push(line);
    await writeFileAtomic(
      logPath,
      new TextEncoder().encode(log.map((l) => JSON.stringify(l)).join("\n") + "\n"),
      {
        force: true,
      },
    );
    const elapsed = (performance.now() - runStart) / 1000;
    const left = (elapsed / (epoch + 1 - startEpoch)) * (a.epochs - epoch - 1);
    say(
      `==> epoch ${epoch}: train ${(100 * line.train_acc).toFixed(2)}%, test ${
        (100 * ev.accuracy).toFixed(2)
      }%` +
        `${improved ? " (best, saved)" : ""}, best ${(100 * best).toFixed(2)}%, ${formatDuration(left)} left`,
    );
  }
  if (endEpoch < a.epochs) {
    say(`==> stopped after epoch ${endEpoch - 1} of ${a.epochs}; continue with: --out ${a.out} --resume`);
  } else {
    say(`==> finished ${a.epochs} epochs; best ${(100 * best).toFixed(2)}% in ${a.out}/best.safetensors`);
  }
  optimizer.dispose();
  model.dispose();
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exitCode = await main(Deno.args);
  } catch (e) {
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      console.error(`transfer: ${(e as Error).message} (see --help)`);
      Deno.exitCode = 2;
    } else if (e instanceof T2tVitError) {
      console.error(`transfer: ${e.message}`);
      Deno.exitCode = 1;
    } else {
      throw e;
    }
  }
}
