/**
 * `convert.ts`: convert a PyTorch checkpoint to safetensors from the command line, without Python and
 * without executing any pickle code, and a safetensors file back to a `torch.save` file.
 *
 * ```sh
 * deno run -A convert.ts 81.5_T2T_ViT_14.pth.tar            # writes 81.5_T2T_ViT_14.safetensors
 * deno run -A convert.ts ckpt.pth --list                     # keys, shapes, dtypes; writes nothing
 * deno run -A convert.ts ckpt.pth -o w.safetensors --dtype f16
 * deno run -A convert.ts best.safetensors -o best.pth        # back to PyTorch (torch.load-able)
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { CheckpointError, printable, printableJson, T2tVitError } from "./src/core/errors.ts";
import { regularFileSize } from "./src/core/files.ts";
import { openCheckpoint, sniffFormat } from "./converters/checkpoint.ts";
import {
  type ConversionPlan,
  convertCheckpoint,
  type ConvertProgress,
  defaultOutputPath,
  defaultTorchOutputPath,
  DTYPE_OPTIONS,
  type DTypeOption,
  exportTorchCheckpoint,
  planConversion,
} from "./converters/convert.ts";
import { readSafetensors } from "./converters/safetensors.ts";
import { type ArchitectureInfo, describeWeights } from "./zoo/arch.ts";
import { writeFileAtomic } from "./src/core/atomic.ts";
import { ensurePretrained } from "./zoo/hub.ts";

/** The `--help` text. */
export const USAGE: string = `Usage: deno run -A convert.ts <checkpoint> [options]
       deno run -A convert.ts <file.safetensors> [-o out.pth] [--wrap KEY] [options]
       deno run -A convert.ts --pretrained <model or tag> [--offline] [-o out.safetensors]

Converts a PyTorch checkpoint (.pth, .pth.tar, .pt, .bin; zip or legacy torch.save format, detected from
its bytes) to a .safetensors file, without Python and without executing any pickle code: only an allowlist
of inert globals is accepted, anything else is refused by name.

Given a .safetensors file (detected from its bytes), writes the other direction: a torch.save zip file
that torch.load(f, weights_only=True) reads, an OrderedDict of the tensors in the official names (for
fine-tuning with the official PyTorch code).

Options:
  -o, --output <file>  output path (default: the input with .pth.tar/.pth/.pt/.bin/.tar/.ckpt
                       replaced by .safetensors; a .safetensors input's with .pth)
  --key <key>          take the weights from this key (a/b reaches nested dicts); default: the
                       official loader's choice: state_dict_ema, state_dict, model, net, else the
                       top level
  --dtype <dtype>      keep | f32 | f16 | bf16: floating-point tensors only, integers are kept;
                       narrowing rounds to nearest even (default keep)
  --wrap <key>         (.safetensors input) put the weights under this key, e.g. state_dict_ema
                       (the official release files' layout); default: a bare state dict
  --no-verify          skip re-reading the output (by default every tensor is compared bit for bit
                       with the input before the file takes its name; a mismatch leaves nothing)
  --list               print the keys, dtypes and shapes that would be written; write nothing
  --json               print the result (or the listing) as JSON on stdout
  --force              overwrite an existing output file
  -q, --quiet          no progress on stderr
  --pretrained         the positional is a released model (t2t_vit_14) or tag (t2t_vit_14.in1k_384):
                       download it into the cache (T2T_VIT_CACHE, else ~/.cache/t2t-vit), check it,
                       convert it once with verification and print the converted file's path
                       (-o copies it there); base URL: T2T_VIT_WEIGHTS_URL
  --offline            with --pretrained: never use the network (also T2T_VIT_OFFLINE=1)
  -h, --help           show this help

Exit status: 0 on success, 1 when the input is bad or unsafe (one-line cause on stderr),
2 on a usage error, 3 on an internal error.`;

const PROGRESS_MIN_BYTES = 50 * 1024 * 1024;

function mb(n: number): string {
  return `${(n / 1e6).toFixed(1)} MB`;
}

function planJson(plan: ConversionPlan<ArchitectureInfo>): Record<string, unknown> {
  return {
    file: plan.file,
    format: plan.format,
    weightsKey: plan.weightsKey,
    strippedPrefix: plan.strippedPrefix,
    architecture: plan.architecture,
    metadata: plan.metadata,
    dataBytes: plan.dataBytes,
    tensors: plan.tensors.map((t) => ({
      name: t.name,
      dtype: t.dtype,
      sourceDtype: t.sourceDtype,
      shape: t.shape,
    })),
    dropped: plan.dropped,
  };
}

function summary(plan: ConversionPlan<ArchitectureInfo>): string {
  const a = plan.architecture;
  const arch = a.name === "unknown"
    ? "architecture not recognised"
    : `${a.name}${
      a.candidates.length > 1 ? ` (or ${a.candidates.filter((c) => c !== a.name).join(", ")})` : ""
    }` +
      `${a.imgSize ? `, ${a.imgSize}px` : ""}, ${a.numClasses} classes`;
  const from = plan.weightsKey === null ? "the top level" : `'${printable(plan.weightsKey)}'`;
  const strip = plan.strippedPrefix ? `, '${printable(plan.strippedPrefix)}' stripped` : "";
  return printable(`${plan.tensors.length} tensors (${mb(plan.dataBytes)}) from ${from}${strip}; ${arch}`);
}

function droppedLine(plan: ConversionPlan<unknown>): string | null {
  if (!plan.dropped.length) return null;
  const shown = plan.dropped.slice(0, 12).map((d) => `${printable(d.key)} (${printable(d.what)})`);
  const more = plan.dropped.length > 12 ? `, and ${plan.dropped.length - 12} more` : "";
  return `dropped: ${shown.join(", ")}${more}`;
}

/**
 * Runs the command with `args` (without the program name); returns the exit status. Output goes to
 * stdout, progress and errors to stderr.
 *
 * @example
 * ```ts ignore
 * import { main } from "./convert.ts";
 * const status = await main(["t2t_vit_7.pth.tar", "--list"]);
 * ```
 */
export async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      strict: true,
      options: {
        output: { type: "string", short: "o" },
        key: { type: "string" },
        wrap: { type: "string" },
        dtype: { type: "string", default: "keep" },
        verify: { type: "boolean", default: true },
        "no-verify": { type: "boolean", default: false },
        list: { type: "boolean", default: false },
        json: { type: "boolean", default: false },
        force: { type: "boolean", default: false },
        quiet: { type: "boolean", short: "q", default: false },
        help: { type: "boolean", short: "h", default: false },
        pretrained: { type: "boolean", default: false },
        offline: { type: "boolean", default: false },
      },
    });
  } catch (e) {
    console.error(`error: ${printable((e as Error).message.split("\n")[0])} (see --help)`);
    return 2;
  }
  const { values: o, positionals } = parsed;
  if (o.help) {
    console.log(USAGE);
    return 0;
  }
  if (positionals.length !== 1) {
    console.error(`error: expected one checkpoint path, got ${positionals.length} (see --help)`);
    return 2;
  }
  if (!DTYPE_OPTIONS.includes(o.dtype as DTypeOption)) {
    console.error(
      `error: --dtype must be one of ${DTYPE_OPTIONS.join(", ")}, not '${printable(String(o.dtype))}'`,
    );
    return 2;
  }
  if (o.list && (o.output !== undefined || o.force)) {
    console.error("error: --list writes nothing; it cannot be combined with --output or --force");
    return 2;
  }
  if (o.offline && !o.pretrained) {
    console.error("error: --offline only applies with --pretrained (see --help)");
    return 2;
  }
  if (o.pretrained) return await pretrained(positionals[0], o);
  const input = positionals[0];
  const dtype = o.dtype as DTypeOption;
  try {
    if (isSafetensors(input)) return await exportMain(input, o);
    if (o.wrap !== undefined) {
      console.error("error: --wrap is for a .safetensors input (writing a .pth); this input is a checkpoint");
      return 2;
    }
    if (o.list) {
      using ckpt = openCheckpoint(input);
      const plan = planConversion(ckpt, { key: o.key, dtype, describe: describeWeights });
      if (o.json) {
        console.log(printableJson(planJson(plan)));
        return 0;
      }
      console.log(`${printable(input)}: ${plan.format} checkpoint; ${summary(plan)}`);
      const dl = droppedLine(plan);
      if (dl) console.log(dl);
      // a loop, not Math.max(...names): a spread of 300k arguments overflows the stack
      const names = plan.tensors.map((t) => printable(t.name));
      let w = 0;
      for (const n of names) if (n.length > w) w = n.length;
      const lines: string[] = [];
      plan.tensors.forEach((t, i) => {
        const conv = t.tensor.dtype !== t.dtype ? ` (from ${t.sourceDtype})` : "";
        lines.push(`${names[i].padEnd(w)}  ${t.dtype.padEnd(4)}  [${t.shape.join(", ")}]${conv}`);
      });
      writeLines(lines);
      return 0;
    }
    const progress = progressReporter(input, o.quiet);
    const onProgress = progress?.update;
    const t0 = performance.now();
    const output = o.output ?? defaultOutputPath(input);
    const r = await convertCheckpoint(input, {
      output,
      key: o.key,
      dtype,
      describe: describeWeights,
      force: o.force,
      verify: !o["no-verify"],
      onProgress,
    });
    progress?.done();
    const secs = (performance.now() - t0) / 1000;
    if (o.json) {
      console.log(printableJson({
        ...planJson(r),
        output: r.output,
        outputBytes: r.outputBytes,
        verified: r.verified,
        seconds: secs,
      }));
      return 0;
    }
    console.log(
      `wrote ${printable(r.output)}: ${summary(r)}; ${secs.toFixed(2)} s${
        r.verified ? ", verified bit for bit" : ""
      }`,
    );
    const dl = droppedLine(r);
    if (dl && !o.quiet) console.log(dl);
    return 0;
  } catch (e) {
    if (e instanceof T2tVitError) {
      console.error(`error: ${printable(e.message.replace(/\s*\n\s*/g, " "))}`);
      return 1;
    }
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.PermissionDenied) {
      console.error(`error: ${printable(`${input}: ${(e as Error).message.replace(/\s*\n\s*/g, " ")}`)}`);
      return 1;
    }
    console.error(`internal error: ${printable((e as Error)?.stack ?? String(e))}`);
    return 3;
  }
}

/**
 * Progress on stderr for inputs over 50 MB (unless quiet): a line rewritten in place on a terminal, every 10%
 * on its own line otherwise.
 */
function progressReporter(
  input: string,
  quiet: boolean | undefined,
): { update: (p: ConvertProgress) => void; done: () => void } | undefined {
  if (quiet || Deno.statSync(input).size <= PROGRESS_MIN_BYTES) return undefined;
  const tty = Deno.stderr.isTerminal();
  const enc = new TextEncoder();
  let lastShown = -1;
  return {
    update: (p) => {
      const pct = p.bytesTotal ? Math.floor((100 * p.bytesDone) / p.bytesTotal) : 100;
      const step = tty ? pct : Math.floor(pct / 10) * 10;
      if (step === lastShown) return;
      lastShown = step;
      const line = `converting ${printable(input)}: ${pct}% (${p.tensorsDone}/${p.tensorsTotal} tensors, ${
        mb(p.bytesDone)
      })`;
      Deno.stderr.writeSync(enc.encode(tty ? `\r${line}` : `${line}\n`));
    },
    done: () => {
      if (tty) Deno.stderr.writeSync(enc.encode("\n"));
    },
  };
}

/** True when the file's first bytes are a safetensors header. */
function isSafetensors(path: string): boolean {
  // a FIFO would block the open, a device never end: refused before opening, as every reader does
  regularFileSize(path, (msg, cause) => {
    throw new CheckpointError(msg, { file: path, cause });
  });
  const f = Deno.openSync(path, { read: true });
  try {
    const head = new Uint8Array(4096);
    let n = 0;
    while (n < head.length) {
      const got = f.readSync(head.subarray(n));
      if (got === null || got === 0) break;
      n += got;
    }
    return sniffFormat(head.subarray(0, n)) === "safetensors";
  } finally {
    f.close();
  }
}

interface ExportFlags {
  output?: string;
  key?: string;
  wrap?: string;
  dtype?: string;
  "no-verify"?: boolean;
  list?: boolean;
  json?: boolean;
  force?: boolean;
  quiet?: boolean;
}

/** safetensors -> .pth (the CLI's other direction). */
async function exportMain(input: string, o: ExportFlags): Promise<number> {
  if (o.key !== undefined || (o.dtype !== undefined && o.dtype !== "keep")) {
    console.error("error: --key and --dtype apply to checkpoints; a .safetensors input is written as it is");
    return 2;
  }
  if (o.list) {
    const st = await readSafetensors(input);
    if (o.json) {
      console.log(JSON.stringify(
        {
          file: input,
          format: "safetensors",
          metadata: st.metadata,
          tensors: [...st.tensors].map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape })),
        },
        null,
        1,
      ));
      return 0;
    }
    console.log(
      `${input}: safetensors file; ${st.tensors.size} tensors${
        st.metadata.architecture ? `; ${st.metadata.architecture}` : ""
      }`,
    );
    const w = Math.max(0, ...[...st.tensors.keys()].map((k) => k.length));
    for (const [name, t] of st.tensors) {
      console.log(`${name.padEnd(w)}  ${t.dtype.padEnd(4)}  [${t.shape.join(", ")}]`);
    }
    return 0;
  }
  const output = o.output ?? defaultTorchOutputPath(input);
  if (/\.safetensors$/i.test(output)) {
    throw new T2tVitError(
      `${input} is already a safetensors file; to write PyTorch's format give an output such as ` +
        `${defaultTorchOutputPath(input)}`,
    );
  }
  const progress = progressReporter(input, o.quiet);
  const t0 = performance.now();
  const r = await exportTorchCheckpoint(input, {
    output,
    wrap: o.wrap,
    force: o.force,
    verify: !o["no-verify"],
    onProgress: progress?.update,
  });
  progress?.done();
  const secs = (performance.now() - t0) / 1000;
  if (o.json) {
    console.log(JSON.stringify({ ...r, seconds: secs }, null, 1));
    return 0;
  }
  const where = r.wrap === null ? "a bare state dict" : `{'${r.wrap}': state dict}`;
  console.log(
    `wrote ${r.output}: torch.save zip, ${r.tensors} tensors (${mb(r.dataBytes)}) as ${where}` +
      `${r.metadata.architecture ? `; ${r.metadata.architecture}` : ""}; ${secs.toFixed(2)} s` +
      `${r.verified ? ", verified bit for bit" : ""}`,
  );
  return 0;
}

/** `--pretrained <model or tag>`: fetch, check, convert and cache a released model; print its path. */
async function pretrained(
  name: string,
  o: {
    output?: string;
    force: boolean;
    quiet: boolean;
    offline: boolean;
    json: boolean;
    list: boolean;
    key?: string;
    dtype?: string;
    "no-verify": boolean;
  },
): Promise<number> {
  if (o.list || o.key !== undefined || o.dtype !== "keep" || o["no-verify"]) {
    console.error(
      "error: --list, --key, --dtype and --no-verify do not apply with --pretrained (see --help)",
    );
    return 2;
  }
  try {
    const r = await ensurePretrained(name, true, {
      offline: o.offline || undefined,
      progress: o.quiet ? false : undefined,
    });
    if (o.output !== undefined) {
      await writeFileAtomic(o.output, await Deno.readFile(r.safetensors), { force: o.force });
    }
    const out = o.output ?? r.safetensors;
    if (o.json) {
      console.log(
        JSON.stringify(
          {
            tag: r.weights.tag,
            url: r.url,
            original: r.original,
            output: out,
            sha256: r.sha256,
            downloaded: r.downloaded,
            converted: r.converted,
          },
          null,
          1,
        ),
      );
    } else {
      const how = r.downloaded
        ? "downloaded and converted"
        : r.converted
        ? "converted from the cache"
        : "from the cache";
      console.log(`${r.weights.tag}: ${out} (${how}; original ${r.original}, SHA-256 ${r.sha256})`);
    }
    return 0;
  } catch (e) {
    if (e instanceof T2tVitError) {
      console.error(`error: ${e.message.replace(/\s*\n\s*/g, " ")}`);
      return 1;
    }
    console.error(`internal error: ${(e as Error)?.stack ?? String(e)}`);
    return 3;
  }
}

/** Prints many lines in a few large writes (one console.log per line is slow for 300k tensors). */
function writeLines(lines: string[]): void {
  for (let i = 0; i < lines.length; i += 4096) console.log(lines.slice(i, i + 4096).join("\n"));
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
