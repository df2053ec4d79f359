/** A rank's comm thread: runs the progress engine until the rank destroys its process group. */
import { workerData } from 'node:worker_threads';
import { Engine } from './engine.js';
import type { CommInit, GroupInit } from './protocol.js';

const { init, world } = workerData as { init: CommInit; world: GroupInit };
new Engine(init, world).run();
