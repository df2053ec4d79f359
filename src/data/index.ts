/** The data layer: corpora, tokenizers, datasets, samplers and (prefetching) loaders. */
export { brownText, brownSplit, writeBrownText, brownFileIds, brownFileText, brownDir } from './brown.js';
export { ByteTokenizer, BpeTokenizer, loadTokenizer, saveTokenizer, tokenizerFromJSON } from './tokenizer.js';
export type { Tokenizer, TokenizerJSON, BpeTrainStats } from './tokenizer.js';
export { TokenDataset, datasetFromSpec, evalWindows } from './dataset.js';
export type { TokenArray, WindowDataset, DatasetSpec } from './dataset.js';
export { RandomWindowSampler, SequentialSampler, samplerFromSpec } from './sampler.js';
export type { Sampler, SamplerSpec, SamplerState, RandomSamplerOptions, SequentialSamplerOptions } from './sampler.js';
export { BatchMaker, importRecordHook } from './batch.js';
export type { Batch, RecordHook, SkippedRecord, Produced } from './batch.js';
export { SyncLoader, PrefetchLoader, createLoader } from './loader.js';
export type { Loader, LoaderOptions, LoaderState, LoaderStats, PrefetchOptions } from './loader.js';
