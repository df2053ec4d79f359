/**
 * What a stuck operation of the threads backend waits for, read from the group's shared memory, for
 * timeout errors and flight dumps. A collective waits first for every peer's header (stamped with
 * the sequence number): a peer whose stamp is missing never arrived, and the group's progress words
 * say the last collective it completed. A receive waits for a message with its tag; a send whose
 * channel stays full waits for a peer that has posted no receive from this rank. Each peer's
 * current activity (its flight recorder's note, mirrored in the control block) is added when set.
 */
import type { Group, Task } from './comm_group.js';
import { OPS } from './layout.js';
import type { Control } from './layout.js';
import { now } from './protocol.js';

export interface Wait {
  /** Group ranks whose part never came. */
  missing: number[];
  detail: string;
}

/** "allReduce#6": the last collective rank p completed on g, or null when none. */
function lastCompleted(g: Group, p: number): string | null {
  const done = Atomics.load(g.i32, g.geo.doneIndex(p));
  if (done === 0) return null;
  // Every rank's header for one sequence number agrees (or the op failed); read this rank's own
  // too, in case p's slot has moved on to the next collective of that parity.
  for (const r of [p, g.rank]) {
    const base = g.headerBase(r, done);
    if (Atomics.load(g.i32, base) === done) return `${OPS[g.i32[base + 1]!] ?? 'collective'}#${done}`;
  }
  return `collective #${done}`;
}

/** "it last completed allReduce#6 on group world; its activity: 'step 3' (for 2.1 s)". */
function whereIs(g: Group, p: number, control: Control, subject: string): string {
  const last = lastCompleted(g, p);
  let s = last === null ? `${subject} has completed no collective on group ${g.name}` : `${subject} last completed ${last} on group ${g.name}`;
  const a = control.activity(g.members[p]!);
  if (a !== null) s += `; its activity: '${a.text}' (for ${((now() - a.at) / 1000).toFixed(1)} s)`;
  return s;
}

function collectiveWait(g: Group, task: Task, control: Control): Wait {
  const missing: number[] = [];
  for (let p = 0; p < g.size; p++) if (p !== g.rank && Atomics.load(g.i32, g.headerBase(p, task.seq)) !== task.seq) missing.push(p);
  if (missing.length === 0) {
    const p = task.waitingOn;
    if (p < 0) return { missing, detail: `every rank arrived at ${task.label}` };
    return { missing, detail: `every rank arrived at ${task.label}; the exchange with ${g.who(p)} stopped moving (${whereIs(g, p, control, 'it')})` };
  }
  const one = missing.length === 1;
  const where = missing.map((p) => whereIs(g, p, control, one ? 'it' : g.who(p))).join('; ');
  return { missing, detail: `${missing.map((p) => g.who(p)).join(' and ')} never arrived (${where})` };
}

function recvWait(g: Group, task: Task, control: Control): Wait {
  const { src, entry } = task.recv!;
  const box = g.inbox[src]!;
  const where = whereIs(g, src, control, 'it');
  if (entry.matched && box.cur !== null && box.cur.entry === entry) {
    return { missing: [src], detail: `${g.who(src)} stopped mid-message (${box.cur.done} of ${box.cur.count} elements arrived; ${where})` };
  }
  const aside = box.unexpected.map((u) => u.tag);
  const others = aside.length === 0 ? '' : `; messages from it with tag ${[...new Set(aside)].join(', ')} are set aside unmatched`;
  return { missing: [src], detail: `${g.who(src)} never sent a message with tag ${entry.tag} (${where}${others})` };
}

function sendWait(g: Group, task: Task, control: Control): Wait {
  const dst = task.peer;
  const me = g.who(g.rank);
  return { missing: [dst], detail: `${g.who(dst)} takes nothing from ${me}: the channel to it stays full, so it has no receive from ${me} posted (${whereIs(g, dst, control, 'it')})` };
}

/** What `task` waits for now (call for a task that is at the head of its queue, not finished). */
export function describeWait(task: Task, control: Control): Wait {
  const g = task.group;
  if (task.seq > 0) return collectiveWait(g, task, control);
  return task.recv !== null ? recvWait(g, task, control) : sendWait(g, task, control);
}
