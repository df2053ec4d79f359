/**
 * MNIST batches and the test accuracy of an ONNX classifier in onnxruntime, shared by the benches
 * that compare exported models (qat.ts, prune_structured.ts).
 */
import type { ImageDataset } from '../src/data/images.js';
import { createInferenceSession } from '../src/runtime/ort.js';
import type { Feed } from '../src/tensor/compile.js';

/** Images i.. of `ds` as one float32 batch and their int64 labels. */
export function batchOf(ds: ImageDataset, idx: readonly number[]): { x: Feed; y: Feed } {
  const x = new Float32Array(idx.length * 784);
  const y = new BigInt64Array(idx.length);
  idx.forEach((i, k) => { const [img, label] = ds.record(i); x.set(img as Float32Array, k * 784); y[k] = BigInt((label as Int32Array)[0]!); });
  return { x: { data: x, shape: [idx.length, 1, 28, 28], dtype: 'float32' }, y: { data: y, shape: [idx.length], dtype: 'int64' } };
}

/**
 * Test accuracy and mean cross-entropy of an ONNX classifier over every image of `test`, batches
 * of 501, one thread; `io` names its input and output ('x' and 'y' by default; weft export's
 * classifier has 'images' and 'logits').
 */
export async function evaluateClassifier(onnx: Uint8Array, test: ImageDataset, io: { input: string; output: string } = { input: 'x', output: 'y' }): Promise<{ accuracy: number; nll: number }> {
  const s = await createInferenceSession(onnx, { threads: 1 });
  let [right, nll] = [0, 0];
  try {
    for (let lo = 0; lo < test.size; lo += 501) {
      const idx = Array.from({ length: Math.min(501, test.size - lo) }, (_, k) => lo + k);
      const { x, y } = batchOf(test, idx);
      const out = (await s.run({ [io.input]: { dtype: 'float32', dims: x.shape, data: x.data } }))[io.output]!.data as Float32Array;
      idx.forEach((_, k) => {
        const row = out.subarray(k * 10, k * 10 + 10);
        const [label, top] = [Number((y.data as BigInt64Array)[k]), Math.max(...row)];
        if (row.indexOf(top) === label) right++;
        nll += Math.log(row.reduce((a, v) => a + Math.exp(v - top), 0)) + top - row[label]!;
      });
    }
  } finally { await s.release(); }
  return { accuracy: right / test.size, nll: +(nll / test.size).toFixed(5) };
}
