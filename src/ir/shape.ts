/**
 * Shapes. A dim is a number, or a string naming a symbolic size (e.g. 'batch') that is fixed only
 * when the graph runs. Broadcasting follows numpy / ONNX multidirectional rules.
 */
export type Dim = number | string;
export type Shape = readonly Dim[];

export const fmt = (s: Shape): string => `[${s.join(', ')}]`;

export const isStatic = (s: Shape): s is readonly number[] => s.every((d) => typeof d === 'number');

/** Element count; throws for symbolic shapes. */
export function numel(s: Shape): number {
  let n = 1;
  for (const d of s) {
    if (typeof d !== 'number') throw new Error(`numel: shape ${fmt(s)} has symbolic dim '${d}'`);
    n *= d;
  }
  return n;
}

export const sameShape = (a: Shape, b: Shape): boolean =>
  a.length === b.length && a.every((d, i) => d === b[i]);

/** Normalizes a possibly negative axis against `rank`, naming `what` in the error. */
export function normAxis(axis: number, rank: number, what: string): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) {
    throw new Error(`${what}: axis ${axis} is out of range for rank ${rank}`);
  }
  return a;
}

/** Broadcasts shapes; `describe(i)` names input i in the error. */
export function broadcastShapes(shapes: Shape[], describe: (i: number) => string): Dim[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: Dim[] = [];
  for (let k = 0; k < rank; k++) {
    let d: Dim = 1;
    let from = -1;
    for (let i = 0; i < shapes.length; i++) {
      const s = shapes[i]!;
      const x = s[s.length - rank + k] ?? 1;
      if (x === 1) continue;
      if (d === 1) { d = x; from = i; continue; }
      if (x !== d) {
        // Some callers' descriptions already show the shape (`input 0 (X) of shape [2, 3]`).
        const label = (j: number): string => {
          const text = describe(j);
          return text.includes(fmt(shapes[j]!)) ? text : `${text} of shape ${fmt(shapes[j]!)}`;
        };
        throw new Error(`cannot broadcast ${label(from)} with ${label(i)}: dim ${k - rank} is ${d} vs ${x}`);
      }
    }
    out.push(d);
  }
  return out;
}

/**
 * Resolves an ONNX Reshape target (0 copies the input dim, -1 is inferred). A -1 facing symbolic
 * input dims resolves to the product expression when the static part divides evenly.
 */
export function reshapeTarget(input: Shape, target: readonly Dim[], what: string): Dim[] {
  const out: Dim[] = target.map((t, i) => (t === 0 ? input[i]! : t));
  const neg = target.filter((t) => t === -1).length;
  if (neg > 1) throw new Error(`${what}: shape ${fmt(target)} has more than one -1`);
  const [inStatic, inSyms] = splitProduct(input);
  if (neg === 0) {
    const [outStatic, outSyms] = splitProduct(out);
    if (inStatic !== outStatic || inSyms.join('*') !== outSyms.join('*')) {
      throw new Error(`${what}: cannot reshape ${fmt(input)} to ${fmt(target)}`);
    }
    return out;
  }
  const rest = out.filter((d) => d !== -1);
  const [restStatic, restSyms] = splitProduct(rest);
  const syms = [...inSyms];
  for (const s of restSyms) {
    const k = syms.indexOf(s);
    if (k < 0) throw new Error(`${what}: cannot reshape ${fmt(input)} to ${fmt(target)}`);
    syms.splice(k, 1);
  }
  if (restStatic === 0 || inStatic % restStatic !== 0) {
    throw new Error(`${what}: cannot reshape ${fmt(input)} (${inStatic} static elements) to ${fmt(target)}`);
  }
  const q = inStatic / restStatic;
  const inferred: Dim = syms.length === 0 ? q : [...(q === 1 ? [] : [String(q)]), ...syms].join('*');
  return out.map((d) => (d === -1 ? inferred : d));
}

/** Splits a shape's product into its static factor and its sorted symbolic factors. */
function splitProduct(s: Shape): [number, string[]] {
  let n = 1;
  const syms: string[] = [];
  for (const d of s) {
    if (typeof d === 'number') n *= d;
    else for (const f of d.split('*')) if (/^\d+$/.test(f)) n *= Number(f); else syms.push(f);
  }
  return [n, syms.sort()];
}
