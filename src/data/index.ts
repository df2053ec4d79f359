/** The data layer: corpora, tokenizers, datasets of typed records, image transforms, samplers and (prefetching) loaders. */
export { brownText, brownSplit, writeBrownText, brownFileIds, brownFileText, brownDir } from './brown.js';
export { ByteTokenizer, BpeTokenizer, loadTokenizer, saveTokenizer, tokenizerFromJSON } from './tokenizer.js';
export type { Tokenizer, TokenizerJSON, BpeTrainStats } from './tokenizer.js';
export { TokenDataset, datasetFromSpec, evalWindows, rowSize } from './dataset.js';
export type { TokenArray, IntArray, Dataset, DatasetSpec, TokenDatasetSpec, FieldSpec, FieldDType, FieldValues, DataRecord } from './dataset.js';
export { ImageDataset } from './images.js';
export type { ImageDatasetOptions, ImageDatasetSpec } from './images.js';
export { ImageTransformer, MNIST_NORMALIZE, batchRng } from './transforms.js';
export type { ImageTransform, Normalize, Augmentation } from './transforms.js';
export { mnist, mnistCounts, MNIST_SHAPE } from './mnist.js';
export type { Mnist, MnistOptions } from './mnist.js';
export { RandomWindowSampler, SequentialSampler, samplerFromSpec } from './sampler.js';
export type { Sampler, SamplerSpec, SamplerState, RandomSamplerOptions, SequentialSamplerOptions } from './sampler.js';
export { BatchMaker, batchField, importRecordHook } from './batch.js';
export type { Batch, BatchField, RecordHook, SkippedRecord, Produced } from './batch.js';
export { SyncLoader, PrefetchLoader, createLoader } from './loader.js';
export type { Loader, LoaderOptions, LoaderState, LoaderStats, PrefetchOptions } from './loader.js';
