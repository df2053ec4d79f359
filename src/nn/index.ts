export { Module, Parameter, init, bindParameters, stateDict, loadStateDict } from './module.js';
export type { Init, BoundParameters } from './module.js';
export { Linear, Embedding, LayerNorm, Dropout } from './layers.js';
export { GPT, Block, MLP, CausalSelfAttention, GPT_PRESETS, PRESET_BATCH } from './gpt.js';
export type { GPTConfig } from './gpt.js';
