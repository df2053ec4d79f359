/**
 * parallel/ps/clocks.ts, the read rule of each consistency mode: BSP reads wait for every worker's
 * previous step, SSP lets a worker run at most s steps ahead of the slowest, ASP never waits;
 * workers that are done or lost stop holding the others; held reads run in order.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Clocks } from '../src/parallel/ps/clocks.js';

test('BSP: a read at step c waits until every worker has finished c steps, and the step is applied before it runs', () => {
  const c = new Clocks(3, 'bsp', 5);
  assert.equal(c.bound, 0);
  const ran: string[] = [];
  c.whenReadable(0, () => ran.push('r0'));
  c.whenReadable(1, () => ran.push('r1'));
  assert.deepEqual(ran, ['r0']);
  c.tick(0, 1, () => ran.push('apply'));
  c.tick(1, 1, () => ran.push('apply'));
  assert.deepEqual(ran, ['r0']);
  c.tick(2, 1, (now, before) => ran.push(`apply ${before}->${now}`));
  assert.deepEqual(ran, ['r0', 'apply 0->1', 'r1']);
  assert.equal(c.maxStaleness, 0);
});

test('SSP: a worker s steps ahead of the slowest reads; s + 1 ahead waits; staleness never passes s', () => {
  const s = 2;
  const c = new Clocks(2, 'ssp', s);
  const ran: number[] = [];
  // Worker 0 races ahead while worker 1 stays at clock 0.
  for (let t = 0; t < 5; t++) {
    c.whenReadable(t, () => ran.push(t));
    if (t < 4) c.tick(0, t + 1);
  }
  assert.deepEqual(ran, [0, 1, 2]);
  c.tick(1, 1);
  assert.deepEqual(ran, [0, 1, 2, 3]);
  c.tick(1, 2);
  assert.deepEqual(ran, [0, 1, 2, 3, 4]);
  assert.equal(c.maxStaleness, s);
  assert.equal(c.held, 2);
});

test('ASP never waits; staleness is recorded; a read at -1 is outside the bound', () => {
  const c = new Clocks(2, 'asp', 0);
  const ran: number[] = [];
  for (let t = 0; t < 10; t++) { c.whenReadable(t, () => ran.push(t)); c.tick(0, t + 1); }
  assert.equal(ran.length, 10);
  assert.equal(c.maxStaleness, 9);
  c.whenReadable(-1, () => ran.push(-1));
  assert.equal(ran.at(-1), -1);
  assert.equal(c.reads, 10);
});

test('a retired worker no longer holds the others back', () => {
  const c = new Clocks(3, 'ssp', 1);
  const ran: number[] = [];
  c.tick(0, 1); c.tick(0, 2);
  c.whenReadable(2, () => ran.push(2)); // needs min clock >= 1
  c.tick(1, 1);
  assert.deepEqual(ran, []);
  c.retire(2);
  assert.deepEqual(ran, [2]);
  assert.equal(c.liveCount(), 2);
  assert.equal(c.minClock(), 1);
});

test('whenMin waits for every live worker; clocks advance by one or it is an error naming the worker', () => {
  const c = new Clocks(2, 'asp', 0);
  let saved = false;
  c.whenMin(1, () => { saved = true; });
  c.tick(0, 1);
  assert.equal(saved, false);
  c.tick(1, 1);
  assert.equal(saved, true);
  assert.throws(() => c.tick(1, 3), /worker 1: clock 3 after 1/);
  assert.throws(() => new Clocks(2, 'ssp', -1), /ps.staleness must be an integer >= 0, got -1/);
});
