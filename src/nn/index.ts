export { Module, Parameter, ModuleBuffer, init, bindParameters, stateDict, loadStateDict, takeBufferUpdates, applyBufferUpdates } from './module.js';
export type { Init, BoundParameters } from './module.js';
export { Linear, Embedding, LayerNorm, Dropout } from './layers.js';
export { GPT, Block, MLP, CausalSelfAttention, GPT_PRESETS, PRESET_BATCH, gptWidths } from './gpt.js';
export type { GPTConfig } from './gpt.js';
export { Conv2d, BatchNorm2d, MaxPool2d, AvgPool2d, GlobalAvgPool, Flatten, ReLU, Sequential, convNet } from './vision.js';
export type { Layer, Conv2dOptions, PoolOptions, ConvNetConfig } from './vision.js';
export { scopeModules } from './scope.js';
