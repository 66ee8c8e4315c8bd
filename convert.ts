/**
 * `convert.ts`: convert a PyTorch checkpoint to safetensors from the command line, without Python and
 * without executing any pickle code.
 *
 * ```sh
 * deno run -A convert.ts 81.5_T2T_ViT_14.pth.tar            # writes 81.5_T2T_ViT_14.safetensors
 * deno run -A convert.ts ckpt.pth --list                     # keys, shapes, dtypes; writes nothing
 * deno run -A convert.ts ckpt.pth -o w.safetensors --dtype f16
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { printable, printableJson, T2tVitError } from "./src/errors.ts";
import { openCheckpoint } from "./converters/checkpoint.ts";
import {
  type ConversionPlan,
  convertCheckpoint,
  type ConvertProgress,
  defaultOutputPath,
  DTYPE_OPTIONS,
  type DTypeOption,
  planConversion,
} from "./converters/convert.ts";

/** The `--help` text. */
export const USAGE: string = `Usage: deno run -A convert.ts <checkpoint> [options]

Converts a PyTorch checkpoint (.pth, .pth.tar, .pt, .bin; zip or legacy torch.save format, detected from
its bytes) to a .safetensors file, without Python and without executing any pickle code: only an allowlist
of inert globals is accepted, anything else is refused by name.

Options:
  -o, --output <file>  output path (default: the input with .pth.tar/.pth/.pt/.bin/.tar/.ckpt
                       replaced by .safetensors)
  --key <key>          take the weights from this key (a/b reaches nested dicts); default: the
                       official loader's choice: state_dict_ema, state_dict, model, net, else the
                       top level
  --dtype <dtype>      keep | f32 | f16 | bf16: floating-point tensors only, integers are kept;
                       narrowing rounds to nearest even (default keep)
  --no-verify          skip re-reading the output (by default every tensor is compared bit for bit
                       with the checkpoint before the file takes its name; a mismatch leaves nothing)
  --list               print the keys, dtypes and shapes that would be written; write nothing
  --json               print the result (or the listing) as JSON on stdout
  --force              overwrite an existing output file
  -q, --quiet          no progress on stderr
  -h, --help           show this help

Exit status: 0 on success, 1 when the input is bad or unsafe (one-line cause on stderr),
2 on a usage error, 3 on an internal error.`;

const PROGRESS_MIN_BYTES = 50 * 1024 * 1024;

function mb(n: number): string {
  return `${(n / 1e6).toFixed(1)} MB`;
}

function planJson(plan: ConversionPlan): Record<string, unknown> {
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

function summary(plan: ConversionPlan): string {
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

function droppedLine(plan: ConversionPlan): string | null {
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
        dtype: { type: "string", default: "keep" },
        verify: { type: "boolean", default: true },
        "no-verify": { type: "boolean", default: false },
        list: { type: "boolean", default: false },
        json: { type: "boolean", default: false },
        force: { type: "boolean", default: false },
        quiet: { type: "boolean", short: "q", default: false },
        help: { type: "boolean", short: "h", default: false },
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
  const input = positionals[0];
  const dtype = o.dtype as DTypeOption;
  try {
    if (o.list) {
      using ckpt = openCheckpoint(input);
      const plan = planConversion(ckpt, { key: o.key, dtype });
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
    const size = Deno.statSync(input).size;
    const showProgress = !o.quiet && size > PROGRESS_MIN_BYTES;
    const tty = Deno.stderr.isTerminal();
    const enc = new TextEncoder();
    let lastShown = -1;
    const onProgress = showProgress
      ? (p: ConvertProgress) => {
        const pct = p.bytesTotal ? Math.floor((100 * p.bytesDone) / p.bytesTotal) : 100;
        const step = tty ? pct : Math.floor(pct / 10) * 10;
        if (step === lastShown) return;
        lastShown = step;
        const line = `converting ${printable(input)}: ${pct}% (${p.tensorsDone}/${p.tensorsTotal} tensors, ${
          mb(p.bytesDone)
        })`;
        Deno.stderr.writeSync(enc.encode(tty ? `\r${line}` : `${line}\n`));
      }
      : undefined;
    const t0 = performance.now();
    const output = o.output ?? defaultOutputPath(input);
    const r = await convertCheckpoint(input, {
      output,
      key: o.key,
      dtype,
      force: o.force,
      verify: !o["no-verify"],
      onProgress,
    });
    if (showProgress && tty) Deno.stderr.writeSync(enc.encode("\n"));
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

/** Prints many lines in a few large writes (one console.log per line is slow for 300k tensors). */
function writeLines(lines: string[]): void {
  for (let i = 0; i < lines.length; i += 4096) console.log(lines.slice(i, i + 4096).join("\n"));
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
