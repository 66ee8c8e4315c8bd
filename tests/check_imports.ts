/**
 * `deno task check:imports`: fails when an import points against the house's one direction,
 *
 *     src/core  <-  converters/  <-  zoo/  <-  src/images, src/data, src/labels.ts  <-  src/train  <-  entry points
 *
 * (entry points: mod.ts, the CLIs, examples/, bench/, fuzz/, tests/, web/), or when tfjs is imported outside
 * the places allowed to touch it directly: `src/core/tf.ts` (the one instance everything else uses) and the
 * backend code under `zoo/backend/` and `zoo/kernels/`, which patches tfjs's registries. Comments are ignored
 * (doc examples may show user code). Run from anywhere; prints one line per violation and exits 1 on any.
 *
 * @module
 */

const ROOT = new URL("../", import.meta.url);

/** Layer rank of a repository path (posix, relative to the root); lower ranks may not import higher ones. */
export function rankOf(path: string): number {
  if (path.startsWith("src/core/")) return 0;
  if (path.startsWith("converters/")) return 1;
  if (path.startsWith("zoo/")) return 2;
  if (path.startsWith("src/train/")) return 4;
  if (path.startsWith("src/")) return 3; // images, data, labels: the inference applications
  return 5; // entry points: mod.ts, CLIs, examples, bench, fuzz, tests, web
}

/** Names of the layers, by rank. */
export const LAYER_NAMES: readonly string[] = [
  "src/core",
  "converters",
  "zoo",
  "src/images|src/data|src/labels",
  "src/train",
  "entry points",
];

const TFJS = /^(npm:)?@tensorflow\/tfjs-/;

function tfjsAllowed(path: string): boolean {
  return path === "src/core/tf.ts" || path.startsWith("zoo/backend/") || path.startsWith("zoo/kernels/") ||
    rankOf(path) === 5;
}

function stripComments(src: string): string {
  return src.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
}

/** The module specifiers a source file imports (static, re-exports, side-effect, dynamic, workers). */
export function importsOf(src: string): { spec: string; typeOnly: boolean }[] {
  const code = stripComments(src);
  const out: { spec: string; typeOnly: boolean }[] = [];
  const re =
    /(?:^|[;\n])\s*(import|export)\s+(type\s+)?(?:[\w*{}\s,$]+?\s+from\s+)?["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)|new URL\(\s*["'](\.[^"']+\.(?:ts|js))["']\s*,\s*import\.meta\.url/g;
  for (const m of code.matchAll(re)) {
    const spec = m[3] ?? m[4] ?? m[5];
    if (spec) out.push({ spec, typeOnly: Boolean(m[2]) });
  }
  return out;
}

async function* walk(dir: URL, rel = ""): AsyncGenerator<string> {
  for await (const e of Deno.readDir(dir)) {
    const p = rel + e.name;
    if (e.name.startsWith(".") || p === "node_modules" || p === "tests/fixtures") continue;
    if (e.isDirectory) yield* walk(new URL(e.name + "/", dir), p + "/");
    else if (/\.(ts|js)$/.test(e.name)) yield p;
  }
}

function resolve(from: string, spec: string): string {
  const parts = from.split("/").slice(0, -1);
  for (const s of spec.split("/")) {
    if (s === "..") parts.pop();
    else if (s !== ".") parts.push(s);
  }
  return parts.join("/");
}

/** Every violation in the repository, one line each. */
export async function violations(root: URL = ROOT): Promise<string[]> {
  const found: string[] = [];
  for await (const path of walk(root)) {
    const src = await Deno.readTextFile(new URL(path, root));
    for (const { spec, typeOnly } of importsOf(src)) {
      if (spec.startsWith(".")) {
        const target = resolve(path, spec);
        const [a, b] = [rankOf(path), rankOf(target)];
        if (b > a) {
          found.push(`${path}: imports ${target} (${LAYER_NAMES[a]} may not import ${LAYER_NAMES[b]})`);
        }
      } else if (TFJS.test(spec) && !typeOnly && !tfjsAllowed(path)) {
        found.push(`${path}: imports ${spec} directly (use the instance of src/core/tf.ts)`);
      }
    }
  }
  return found;
}

if (import.meta.main) {
  const found = await violations();
  for (const v of found) console.error(v);
  if (found.length) {
    console.error(`${found.length} import(s) against the layering (see ARCHITECTURE.md)`);
    Deno.exit(1);
  }
  console.log("imports point one way: src/core <- converters <- zoo <- applications");
}
