/** Parallel plans over process groups: data parallel today (tensor, pipeline, expert and ZeRO plans belong here). */
export { DistributedDataParallel, allReduceHook, bf16Hook, ddpBuckets, fp16Hook, makeBuckets } from './ddp.js';
export type { Bucket, CommHook, DDPOptions } from './ddp.js';
export { compileSpmd } from './spmd.js';
export { shardedNorm, wholeTensor, localPart } from './tensor_parallel.js';
export type { Placements } from './tensor_parallel.js';
// Pipeline schedules as data; their generic names (simulate, validate, Action) stay under one namespace: weft.pipeline.*.
export * as pipeline from './pipeline_schedule.js';
// The parameter server's key placement (issue 17 builds the servers on it).
export { HashRing, hashKey, movedKeys, rowKey } from './hash_ring.js';
