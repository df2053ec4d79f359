/** Optimizers as ONNX graphs over flat buffers, gradient clipping and learning-rate schedules. */
export { AdamW } from './adamw.js';
export type { AdamWConfig, AdamWState, StepInfo } from './adamw.js';
export { SGD } from './sgd.js';
export type { SGDConfig, SGDState } from './sgd.js';
export { clipGradNorm, clipScale, globalNorm, CLIP_EPS } from './clip.js';
export { constantLr, warmupConstant, warmupCosine, warmupFactor } from './schedule.js';
export type { Schedule, WarmupConvention, WarmupConfig, WarmupCosineConfig } from './schedule.js';
export { Adafactor } from './adafactor.js';
export type { AdafactorConfig } from './adafactor.js';
export { FileVector, OffloadedState, RING } from './offload.js';
export type { IoStats, OffloadConfig } from './offload.js';
