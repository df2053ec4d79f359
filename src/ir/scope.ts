/**
 * Scopes: which module a traced node came from, without the module's code knowing. A caller wraps
 * a computation in `withScope(path, fn)` and every node created inside it carries `path` as its
 * `scope` (`Node.scope`); the innermost scope wins (module paths are absolute: 'h0.attn', not a
 * suffix of 'h0'). nn's `scopeModules` wraps chosen modules' forwards this way; autodiff stamps
 * each backward node with the scope of the forward node it differentiates, so a pass over the
 * traced step (activation checkpointing, autodiff/checkpoint.ts) can tell one unit's forward and
 * backward from another's.
 */

let current: string | null = null;

/** The scope nodes created now are stamped with (null: none). */
export const currentScope = (): string | null => current;

/** Runs `fn` with `scope` as the current scope (null clears it), restoring the previous one after. */
export function withScope<T>(scope: string | null, fn: () => T): T {
  const prev = current;
  current = scope;
  try { return fn(); } finally { current = prev; }
}

/**
 * A glob over dotted module paths as a RegExp: `*` matches within one path segment, so 'h*'
 * matches 'h0' and 'h11' but not 'h0.attn'.
 */
export const globRegExp = (pattern: string): RegExp =>
  new RegExp(`^${pattern.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('[^.]*')}$`);

/**
 * Maps a node's scope to the unit it lies in: the outermost dotted prefix of the scope that one of
 * `globs` matches ('h0.attn' lies in 'h0' under ['h*']), or null when none does.
 */
export function unitMatcher(globs: readonly string[]): (scope: string | null) => string | null {
  const res = globs.map(globRegExp);
  const memo = new Map<string, string | null>();
  return (scope) => {
    if (scope === null) return null;
    let u = memo.get(scope);
    if (u !== undefined) return u;
    u = null;
    const parts = scope.split('.');
    for (let i = 1; i <= parts.length && u === null; i++) {
      const prefix = parts.slice(0, i).join('.');
      if (res.some((re) => re.test(prefix))) u = prefix;
    }
    memo.set(scope, u);
    return u;
  };
}
