/**
 * Test groups that run in one child process (so that their time and peak-memory measurements are not
 * disturbed by the rest of the suite), reported as one `Deno.test` per group in the parent.
 *
 * @module
 */

import assert from "node:assert/strict";

/** What the child measured of one case. */
export interface Measured {
  what: string;
  ms: number;
  growthMiB: number | null;
}

/** One group's outcome in the child. */
export interface GroupResult {
  name: string;
  error?: string;
  measured: Measured[];
}

/** A named group of checks. */
export type Group = [string, () => void | Promise<void>];

/** Child side: runs every group, collecting what it measured into `measured`, and prints the results as JSON. */
export async function runGroupsAndPrint(groups: Group[], measured: Measured[]): Promise<void> {
  const results: GroupResult[] = [];
  for (const [name, fn] of groups) {
    measured.length = 0;
    try {
      await fn();
      results.push({ name, measured: [...measured] });
    } catch (e) {
      results.push({
        name,
        error: e instanceof Error ? e.stack ?? e.message : String(e),
        measured: [...measured],
      });
    }
  }
  console.log(JSON.stringify(results));
}

/**
 * Parent side: one `Deno.test` per group, named `${prefix}: ${name}`; the module at `moduleUrl` is run once
 * with `--child` for all of them, and `report` prints each group's measurements before its error is thrown.
 */
export function registerChildGroups(
  moduleUrl: string,
  groups: Group[],
  prefix: string,
  report: (r: GroupResult) => void,
): void {
  let child: Promise<GroupResult[]> | null = null;
  const runChild = async (): Promise<GroupResult[]> => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL(moduleUrl).pathname, "--child"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout).trim();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    return JSON.parse(text.slice(text.lastIndexOf("\n[") + 1));
  };
  for (const [name] of groups) {
    Deno.test(`${prefix}: ${name}`, async () => {
      child ??= runChild();
      const r = (await child).find((g) => g.name === name);
      assert.ok(r, `the child ran '${name}'`);
      report(r);
      if (r.error) throw new Error(`in the child process: ${r.error}`);
    });
  }
}
