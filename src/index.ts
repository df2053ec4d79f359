/** weft: train and ship neural networks in TypeScript, on ONNX Runtime. */
import './ir/ops/index.js';

export * as ops from './ir/build.js';
export type { DType, TypedArray } from './ir/dtype.js';
export { Value, Node } from './ir/graph.js';
export { defineOp, knownOps } from './ir/registry.js';
export type { OpDef, GradCtx, InferCtx } from './ir/registry.js';
export { toModelProto, OPSET } from './ir/onnx/export.js';
export { fromModelProto, OnnxImportError } from './ir/onnx/import.js';
export { grad as gradValues } from './autodiff/grad.js';
export { realize as realizeValues, setThreads, settings, clearCache, cacheSize, compileProgram, runProgram } from './runtime/executor.js';
export { Layout, FlatBuffer } from './runtime/flat.js';
export { profiler, Profiler } from './runtime/profiler.js';
export { Tensor, tensor, zeros, ones, randn, placeholder, grad, realize } from './tensor/tensor.js';
export { compile } from './tensor/compile.js';
export { Rng } from './tensor/random.js';
export { AdamW, SGD, clipGradNorm, constantLr, warmupConstant, warmupCosine, warmupFactor } from './optim/index.js';
export type { AdamWConfig, AdamWState, StepInfo, SGDConfig, SGDState, Schedule, WarmupConvention, WarmupConfig, WarmupCosineConfig } from './optim/index.js';
export * from './data/index.js';
export * from './nn/index.js';
export { gradStep } from './train/step.js';
export { Trainer } from './train/trainer.js';
export { loadConfig, parseConfig, ConfigError } from './train/config.js';
export type { RunConfig } from './train/config.js';
export { saveCheckpoint, loadCheckpoint, latestCheckpoint, CheckpointError } from './train/checkpoint.js';
export { encodeSafetensors, decodeSafetensors } from './train/safetensors.js';
export { Generator } from './train/generate.js';
export * from './dist/index.js';
