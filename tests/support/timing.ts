/**
 * Time bounds for tests that guard against hangs and super-linear blow-ups (a quadratic regex, a stack of
 * nested loops). The bounds are what the work takes on an idle core times a slack factor: `deno test
 * --parallel` shares the machine's cores between test modules, so wall-clock time on a loaded CI machine is
 * several times the idle figure, while the failures these tests exist for are 10x to 1000x slower.
 * `T2T_TIME_SLACK` overrides the factor (default 5).
 */
export const TIME_SLACK: number = Number(Deno.env.get("T2T_TIME_SLACK") ?? "5");

/** `idleMs` scaled by {@link TIME_SLACK}. */
export function timeBound(idleMs: number): number {
  return idleMs * TIME_SLACK;
}
