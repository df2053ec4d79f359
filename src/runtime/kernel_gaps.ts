/**
 * Rewrites for ops onnxruntime's CPU provider lacks in some dtype. Today: Erf has no float64
 * kernel, so float64 Erf becomes its Maclaurin series (Horner in x^2, 60 terms) for |x| <= 3.5,
 * accurate to ~1e-13 there, and the float32 kernel beyond, where erf is within 1e-6 of +-1.
 */
import * as b from '../ir/build.js';
import type { Value } from '../ir/graph.js';
import { rewrite } from '../ir/rewrite.js';

const TERMS = 60;
// c_n = (-1)^n / (n! (2n + 1)), times 2/sqrt(pi).
const COEF = Array.from({ length: TERMS }, (_, n) => {
  let f = 1;
  for (let k = 2; k <= n; k++) f *= k;
  return ((n % 2 === 0 ? 1 : -1) / (f * (2 * n + 1))) * (2 / Math.sqrt(Math.PI));
});

function erf64(x: Value): Value {
  const x2 = b.mul(x, x);
  let s = b.scalarLike(COEF[TERMS - 1]!, x);
  for (let n = TERMS - 2; n >= 0; n--) s = b.add(b.mul(s, x2), b.scalarLike(COEF[n]!, x));
  const series = b.mul(x, s);
  const far = b.cast(b.erf(b.cast(x, 'float32')), 'float64');
  const near = b.apply1('Less', [b.apply1('Abs', [x]), b.scalarLike(3.5, x)]);
  return b.where(near, series, far);
}

export function fillKernelGaps(outputs: readonly Value[]): Value[] {
  return rewrite(outputs, (n, inputs) => (n.op === 'Erf' && inputs[0]!.dtype === 'float64' ? [erf64(inputs[0]!)] : null));
}
