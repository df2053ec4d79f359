/**
 * The flight recorder (src/comm/flight.ts): the ring, its dumps, and turning it off. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FlightRecorder } from '../src/comm/flight.js';
import type { FlightDump } from '../src/comm/flight.js';

test('the ring keeps the last N operations, oldest first, and ignores settling one it has dropped', () => {
  const out: string[] = [];
  const rec = new FlightRecorder(3, null, (t) => out.push(t));
  rec.attach(5, 'test');
  const tickets = [1, 2, 3, 4, 5].map((i) => rec.issue('world', 'allReduce', i, `allReduce#${i}`, 10 * i, 'float32'));
  rec.settle(tickets[0]!, null); // dropped: slot reused by allReduce#4
  rec.settle(tickets[3]!, null);
  rec.settle(tickets[4]!, 'boom');
  const s = rec.snapshot();
  assert.equal(s.recorded, 5);
  assert.deepEqual(s.ops.map((o) => [o.label, o.count, o.state, o.error]), [
    ['allReduce#3', 30, 'issued', null], ['allReduce#4', 40, 'completed', null], ['allReduce#5', 50, 'failed', 'boom']]);
  assert.equal(s.ops[0]!.completedAt, null);
  assert.ok(s.ops[1]!.completedAt! >= s.ops[1]!.issuedAt);
});

test('a dump is written once, with the activity and every line prefixed with the rank', () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-flight-'));
  try {
    const out: string[] = [];
    const rec = new FlightRecorder(4, dir, (t) => out.push(t));
    rec.attach(1, 'test');
    rec.note('program fwd_bwd#3');
    rec.issue('world', 'recv', 1, 'recv#1', 3, 'int32', 0, 7);
    const wait = { group: 'world', label: 'recv#1', missing: [0], missingWorld: [0], detail: 'rank 0 never sent a message with tag 7' };
    assert.equal(rec.trigger('rank 1: recv#1 timed out', [wait]), true);
    assert.equal(rec.trigger('again', []), false);
    assert.equal(out.length, 1);
    const lines = out[0]!.trimEnd().split('\n');
    assert.ok(lines.every((l) => l.startsWith('[flight rank 1] ')), out[0]);
    assert.match(out[0]!, /activity: 'program fwd_bwd#3'/);
    assert.match(out[0]!, /waiting: recv#1 on group world: rank 0 never sent a message with tag 7/);
    assert.match(out[0]!, /world recv#1 from 0 tag 7 3 int32 issued -\d+\.\d ms still pending/);
    const file = JSON.parse(readFileSync(join(dir, 'flight-rank-1.json'), 'utf8')) as FlightDump;
    assert.equal(file.reason, 'rank 1: recv#1 timed out');
    assert.deepEqual(file.waits, [wait]);
    assert.equal(file.ops[0]!.peer, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('with capacity 0 nothing is recorded or dumped', () => {
  const out: string[] = [];
  const rec = new FlightRecorder(0, null, (t) => out.push(t));
  assert.equal(rec.issue('world', 'barrier', 1, 'barrier#1', 0, 'int32'), 0);
  rec.settle(0, null);
  assert.equal(rec.trigger('x', []), false);
  assert.deepEqual(rec.snapshot().ops, []);
  assert.deepEqual(out, []);
});
