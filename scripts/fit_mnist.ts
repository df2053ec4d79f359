/**
 * The README's `fit` example, compiled with the project so it stays true:
 * `npm run build && node dist/scripts/fit_mnist.js [epochs]`.
 */
import { BatchNorm2d, Conv2d, earlyStopping, fit, Flatten, Linear, MaxPool2d, mnist, ReLU, Sequential } from '../src/index.js';

const epochs = Number(process.argv[2] ?? 3);
const { train, test } = mnist({ augment: { randomCrop: { padding: 2 } } });
const model = new Sequential([
  new Conv2d(1, 32, 3, { padding: 1, bias: false }), new BatchNorm2d(32), new ReLU(), new MaxPool2d(2),
  new Flatten(), new Linear(32 * 14 * 14, 10),
]);
const r = await fit(model, {
  train, eval: test, epochs, batch: 64, lr: 2e-3, metrics: ['accuracy', 'top5'], out: 'runs/fit-mnist',
  callbacks: [earlyStopping({ monitor: 'accuracy', patience: 2 }), { onStepEnd: (m) => { if (m.step % 50 === 0) console.log(`step ${m.step} loss ${m.loss.toFixed(4)}`); } }],
  log: null,
});
console.log(r.evals.at(-1)?.metrics);
