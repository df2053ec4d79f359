/**
 * Module scopes on traced nodes, without touching model code: `scopeModules(model, globs)` wraps
 * the `forward` of each matching module instance (as a tensor-parallel plan wraps its styles',
 * nn/tensor_parallel.ts) so that every node it traces carries the module's path as `Node.scope`.
 * Activation checkpointing (autodiff/checkpoint.ts) finds its units by these scopes.
 *
 *   scopeModules(gpt, ['h*']);   // nodes traced by gpt.h0.forward carry scope 'h0', ...
 */
import { globRegExp, withScope } from '../ir/scope.js';
import type { Module } from './module.js';

type Forward = (...args: unknown[]) => unknown;

/** Instances already wrapped: scoping twice (a second trainer on the same model) is a no-op. */
const scoped = new WeakSet<Module>();

/**
 * Wraps the forward of every module of `model` whose dotted path matches one of `globs` (`*`
 * matches within a path segment). Returns the matched paths. A glob that matches no module, or a
 * match without a `forward`, is an error naming it.
 */
export function scopeModules(model: Module, globs: readonly string[]): string[] {
  const modules = model.namedModules();
  const hit: string[] = [];
  for (const g of globs) {
    const re = globRegExp(g);
    const matches = modules.filter(([path]) => path !== '' && re.test(path));
    if (matches.length === 0) throw new Error(`scopeModules: '${g}' matches no module of ${model.constructor.name} (modules: ${modules.map(([p]) => p).filter(Boolean).slice(0, 12).join(', ')}, ...)`);
    for (const [path, m] of matches) {
      hit.push(path);
      if (scoped.has(m)) continue;
      const holder = m as unknown as { forward?: Forward };
      const forward = holder.forward;
      if (typeof forward !== 'function') throw new Error(`scopeModules: '${path}' (${m.constructor.name}) has no forward to scope`);
      holder.forward = (...args: unknown[]): unknown => withScope(path, () => forward.apply(m, args));
      scoped.add(m);
    }
  }
  return hit;
}
