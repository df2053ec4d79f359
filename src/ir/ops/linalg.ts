import * as b from '../build.js';
import { defineOp } from '../registry.js';
import { broadcastShapes, fmt } from '../shape.js';
import { requireFloat, sameDtype } from './common.js';

/**
 * MatMul with numpy semantics: 1-D operands are promoted (and the added dim removed afterwards),
 * batch dims broadcast. dA = dY B^T, dB = A^T dY; the engine sums broadcast batch dims.
 */
defineOp({
  name: 'MatMul', inputs: ['A', 'B'],
  infer: (c) => {
    const dtype = sameDtype(c);
    requireFloat(c, 0);
    const [a, bb] = [c.input(0).shape, c.input(1).shape];
    if (a.length === 0 || bb.length === 0) c.fail(`inputs must have rank >= 1, got ${fmt(a)} and ${fmt(bb)}`);
    const A = a.length === 1 ? [1, a[0]!] : a;
    const B = bb.length === 1 ? [bb[0]!, 1] : bb;
    const k1 = A[A.length - 1]!;
    const k2 = B[B.length - 2]!;
    if (k1 !== k2) {
      c.fail(`${c.describe(0)} and ${c.describe(1)}: A's last dim (${k1}) must equal B's second-to-last dim (${k2})`);
    }
    const batch = broadcastShapes([A.slice(0, -2), B.slice(0, -2)], (i) => `${c.describe(i)} (batch dims)`);
    const out = [...batch];
    if (a.length > 1) out.push(A[A.length - 2]!);
    if (bb.length > 1) out.push(B[B.length - 1]!);
    return [{ dtype, shape: out }];
  },
  grad: (g) => {
    let [A, B, dy] = [g.input(0), g.input(1), g.dy[0]!];
    // Promote 1-D operands so both rules are plain batched matrix products. B's dim goes back
    // first: for a 1-D x 1-D product dy is a scalar, and -2 only exists once -1 does.
    if (B.rank === 1) { B = b.unsqueeze(B, [1]); dy = b.unsqueeze(dy, [-1]); }
    if (A.rank === 1) { A = b.unsqueeze(A, [0]); dy = b.unsqueeze(dy, [-2]); }
    let dA = g.needs[0] ? b.matmul(dy, b.transposeLast2(B)) : null;
    let dB = g.needs[1] ? b.matmul(b.transposeLast2(A), dy) : null;
    if (dA && g.input(0).rank === 1) dA = b.squeeze(b.unbroadcast(dA, A.shape), [0]);
    if (dB && g.input(1).rank === 1) dB = b.squeeze(b.unbroadcast(dB, B.shape), [1]);
    return [dA, dB];
  },
});

/** Gemm: Y = alpha A' B' + beta C, with A' = transA ? A^T : A (same for B). 2-D only. */
defineOp({
  name: 'Gemm', inputs: ['A', 'B', 'C?'],
  attrs: {
    alpha: { kind: 'float', default: 1 }, beta: { kind: 'float', default: 1 },
    transA: { kind: 'int', default: 0 }, transB: { kind: 'int', default: 0 },
  },
  infer: (c) => {
    const dtype = sameDtype(c);
    requireFloat(c, 0);
    const [a, bb] = [c.input(0).shape, c.input(1).shape];
    if (a.length !== 2 || bb.length !== 2) c.fail(`A and B must be 2-D, got ${fmt(a)} and ${fmt(bb)}`);
    const [m, k1] = c.attr<number>('transA') ? [a[1]!, a[0]!] : [a[0]!, a[1]!];
    const [k2, n] = c.attr<number>('transB') ? [bb[1]!, bb[0]!] : [bb[0]!, bb[1]!];
    if (k1 !== k2) c.fail(`${c.describe(0)} and ${c.describe(1)}: inner dims differ (${k1} vs ${k2}) after transA/transB`);
    const C = c.inputs[2];
    if (C) broadcastShapes([C.shape, [m, n]], (i) => (i === 0 ? c.describe(2) : 'the product A\'B\''));
    return [{ dtype, shape: [m, n] }];
  },
  grad: (g) => {
    const [A, B, dy] = [g.input(0), g.input(1), g.dy[0]!];
    const alpha = g.attr<number>('alpha');
    const tA = g.attr<number>('transA') === 1;
    const tB = g.attr<number>('transB') === 1;
    const dA = !g.needs[0] ? null : tA
      ? b.gemm(B, dy, null, { transA: tB, transB: true, alpha })
      : b.gemm(dy, B, null, { transB: !tB, alpha });
    const dB = !g.needs[1] ? null : tB
      ? b.gemm(dy, A, null, { transA: true, transB: tA, alpha })
      : b.gemm(A, dy, null, { transA: !tA, alpha });
    const beta = g.attr<number>('beta');
    const dC = g.inputs[2] && g.needs[2] ? (beta === 1 ? dy : b.mul(dy, b.scalarLike(beta, dy))) : null;
    return [dA, dB, dC];
  },
});

/**
 * `weft.NativeGemm`: a float32 matrix product run outside onnxruntime by a native library
 * (runtime/native_products.ts chooses, per shape, which products of a traced graph become one,
 * after autodiff: it has no gradient rule). Y[..., m, n] = op(A) op(B) + C, op(X) = X^T over the
 * last two dims where transA / transB is set; A and B have the same batch dims, or one of them
 * none (it is shared by the batch); C, optional, is a bias of n or a matrix [m, n]. `lib` names
 * the library (the addon's index: 0 OpenBLAS, 1 oneDNN, 2 oneDNN on operands rounded to bfloat16, which
 * only bf16 mixed precision's products take: their float32 operands hold bfloat16 values).
 */
defineOp({
  name: 'weft.NativeGemm', inputs: ['A', 'B', 'C?'], host: true, inline: true,
  attrs: { transA: { kind: 'int', default: 0 }, transB: { kind: 'int', default: 0 }, lib: { kind: 'int', default: 0 } },
  infer: (c) => {
    const dtype = sameDtype(c);
    if (dtype !== 'float32') c.fail(`inputs must be float32, got ${dtype}`);
    const [a, bb] = [c.input(0).shape, c.input(1).shape];
    if (a.length < 2 || bb.length < 2) c.fail(`A and B must have rank >= 2, got ${fmt(a)} and ${fmt(bb)}`);
    const [ba, bbb] = [a.slice(0, -2), bb.slice(0, -2)];
    if (ba.length > 0 && bbb.length > 0 && fmt(ba) !== fmt(bbb)) c.fail(`batch dims must be equal or absent on one side, got ${fmt(a)} and ${fmt(bb)}`);
    const [m, k1] = c.attr<number>('transA') ? [a.at(-1)!, a.at(-2)!] : [a.at(-2)!, a.at(-1)!];
    const [k2, n] = c.attr<number>('transB') ? [bb.at(-1)!, bb.at(-2)!] : [bb.at(-2)!, bb.at(-1)!];
    if (k1 !== k2) c.fail(`${c.describe(0)} and ${c.describe(1)}: inner dims differ (${String(k1)} vs ${String(k2)}) after transA/transB`);
    const C = c.inputs[2];
    if (C && !(fmt(C.shape) === fmt([n]) || fmt(C.shape) === fmt([1, n]) || fmt(C.shape) === fmt([m, n]))) c.fail(`${c.describe(2)}: C must be [n], [1, n] or [m, n] (n ${String(n)}, m ${String(m)})`);
    return [{ dtype, shape: [...(ba.length > 0 ? ba : bbb), m, n] }];
  },
  grad: () => { throw new Error('weft.NativeGemm has no gradient: native products are chosen after autodiff (runtime/native_products.ts)'); },
});
