/**
 * The comm thread's progress engine. One per rank; it serves every group the rank belongs to.
 *
 * Requests arrive on a MessagePort that the engine polls (`receiveMessageOnPort`) whenever its
 * doorbell rings; the rank thread rings it after posting. Each operation is a generator (see
 * collectives.ts, transport.ts) that moves what it can and yields the peer it waits for. The engine
 * steps the runnable ones (the head of each group's collective queue, the head of each
 * per-destination send queue, every posted receive) until none moves, then sleeps on its doorbell
 * (Atomics.wait) until a peer changes something, the nearest timeout, or 1 s.
 *
 * Failure: an operation that does not move for `timeoutMs` fails naming what it waits for (the
 * peers that never arrived and how far each got, see diagnose.ts) and leaves its group unusable on
 * this rank (later operations fail at once). The launch's first timeout is recorded in the control
 * block, and every comm thread that sees it sends its rank a flight dump request describing what
 * that rank's pending operations wait for (see ../flight.ts); an abort (a rank died)
 * fails everything; a peer that has returned from its entry, or failed without aborting the launch
 * (a rank the launch tolerates losing), while still awaited fails the wait: a collective breaks its
 * group, a point-to-point operation fails alone and the group stays usable with its other peers
 * (a parameter server goes on serving the workers that remain).
 * Ranks that disagree on a collective's header all fail it and the group stays usable.
 */
import { receiveMessageOnPort } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import type { CommArray } from '../process_group.js';
import { collective, Group, Mismatch, Task } from './comm_group.js';
import { describeWait } from './diagnose.js';
import { Control, FAILED, RUNNING, typedView } from './layout.js';
import { p2pRecv, p2pSend } from './p2p.js';
import type { RecvEntry } from './p2p.js';
import { now } from './protocol.js';
import type { CommInit, FlightWaitReport, FromComm, GroupInit, P2pRequest, StagingRef, ToComm } from './protocol.js';

export class Engine {
  work = 0;
  readonly control: Control;
  private readonly bell: number;
  private readonly port: MessagePort;
  private readonly groups = new Map<number, Group>();
  private readonly active = new Set<Task>();
  private readonly staging = new Map<number, SharedArrayBuffer>();
  private exiting = false;
  private abortSeen = false;
  private flightSent = false;

  constructor(private readonly init: CommInit, world: GroupInit) {
    this.control = new Control(init.control);
    this.bell = this.control.bell(init.rank);
    this.port = init.port;
    this.handle(world);
  }

  /** Runs until the rank asks it to exit. Never returns to the event loop before that. */
  run(): void {
    const i32 = this.control.i32;
    for (;;) {
      const bell = Atomics.load(i32, this.bell);
      let got = false;
      for (let m = receiveMessageOnPort(this.port); m !== undefined; m = receiveMessageOnPort(this.port)) {
        this.handle(m.message as ToComm);
        got = true;
      }
      if (this.exiting) {
        this.failAll((task) => `${task.group.who(task.group.rank)}: ${task.desc} failed: the process group was destroyed`);
        return;
      }
      // A timeout elsewhere first: an abort that follows it would fail the tasks its dump describes.
      this.checkTimeoutElsewhere();
      this.checkAbort();
      const t = performance.now();
      const w0 = this.work;
      let finished = false;
      let deadline = Infinity;
      for (const task of [...this.active]) {
        if (!this.active.has(task)) continue;
        finished = this.step(task, t) || finished;
        if (this.active.has(task)) deadline = Math.min(deadline, task.lastProgress + this.init.timeoutMs);
      }
      if (got || finished || this.work !== w0) continue;
      const ms = this.active.size === 0 ? 1000 : Math.max(1, Math.min(1000, deadline - t));
      Atomics.wait(i32, this.bell, bell, ms);
    }
  }

  /** Advances one task; true when it finished. */
  private step(task: Task, t: number): boolean {
    const g = task.group;
    const peer = task.waitingOn;
    // Read before stepping: a peer seen gone here has published everything it ever will.
    const gone = peer >= 0 && this.control.status(g.members[peer]!) !== RUNNING;
    const before = this.work;
    let r: IteratorResult<number, void>;
    try {
      r = task.gen.next();
    } catch (e) {
      if (e instanceof Mismatch) this.finish(task, e.message);
      else this.breakGroup(g, `${g.who(g.rank)}: ${task.desc} failed: ${(e as Error).message}`, task);
      return true;
    }
    if (r.done === true) { this.finish(task, null); return true; }
    task.waitingOn = r.value;
    if (this.work !== before) { task.lastProgress = t; return false; }
    if (gone && r.value === peer) {
      const why = `${g.who(g.rank)}: ${task.desc} cannot complete: ${g.who(peer)} ${this.control.status(g.members[peer]!) === FAILED ? 'has failed' : 'has already returned from its entry'}`;
      if (task.queue === g.collQueue) this.breakGroup(g, why, task);
      else this.finish(task, why);
      return true;
    }
    if (t - task.lastProgress >= this.init.timeoutMs) {
      const why = `${g.who(g.rank)}: ${task.desc} timed out after ${this.init.timeoutMs} ms: ${describeWait(task, this.control).detail}`;
      this.control.timedOut(this.init.rank, why);
      this.sendFlight(why);
      this.breakGroup(g, why, task);
      return true;
    }
    return false;
  }

  private handle(m: ToComm): void {
    switch (m.type) {
      case 'group': {
        this.groups.set(m.gid, new Group(this, m.gid, m.name, m.sab, m.members, m.rank, m.regionBytes));
        return;
      }
      case 'coll': {
        const g = this.groups.get(m.gid);
        const desc = `${m.op}#${m.seq}`;
        if (this.refuse(m.id, g, desc)) return;
        const bufs = m.bufs.map((b) => this.view(b, m.dtype));
        this.submit(new Task(m.id, desc, desc, g!, collective(g!, m, bufs), g!.collQueue, m.seq, -1));
        return;
      }
      case 'send': case 'recv': {
        const g = this.groups.get(m.gid);
        const desc = `${m.type}#${m.seq} ${m.type === 'send' ? 'to' : 'from'} ${g?.who(m.peer) ?? `rank ${m.peer}`} (tag ${m.tag})`;
        if (this.refuse(m.id, g, desc)) return;
        this.submitP2p(g!, m, desc);
        return;
      }
      case 'close': {
        const g = this.groups.get(m.gid);
        if (g === undefined) return;
        for (const task of [...g.tasks]) this.finish(task, `${g.who(g.rank)}: ${task.desc} failed: the process group was destroyed`);
        this.groups.delete(m.gid);
        return;
      }
      case 'forget': for (const id of m.ids) this.staging.delete(id); return;
      case 'exit': this.exiting = true; return;
    }
  }

  private submitP2p(g: Group, m: P2pRequest, desc: string): void {
    const arr = this.view(m.buf, m.dtype);
    const label = `${m.type}#${m.seq}`;
    if (m.type === 'send') {
      this.submit(new Task(m.id, label, desc, g, p2pSend(g, m.peer, m.tag, arr, m.dtype), g.sendQueues[m.peer]!, 0, m.peer));
      return;
    }
    const entry: RecvEntry = { tag: m.tag, arr, dtype: m.dtype, desc, matched: false, complete: false, error: null };
    g.inbox[m.peer]!.posted.push(entry);
    this.submit(new Task(m.id, label, desc, g, p2pRecv(g, m.peer, entry), null, 0, m.peer, { src: m.peer, entry }));
  }

  /** Fails a request at once when its group is gone or unusable or the launch aborted. */
  private refuse(id: number, g: Group | undefined, desc: string): boolean {
    const a = this.control.aborted();
    let error: string | null = null;
    if (g === undefined) error = `${desc} failed: the process group was destroyed`;
    else if (a !== null) error = this.abortMessage(g, desc, a);
    else if (g.broken !== null) error = `${g.who(g.rank)}: ${desc} not run: the group is unusable after an earlier failure (${g.broken})`;
    if (error === null) return false;
    this.post({ type: 'done', id, error, at: now() });
    return true;
  }

  private view(b: StagingRef, dtype: number): CommArray {
    if (b.sab !== undefined) this.staging.set(b.id, b.sab);
    const sab = this.staging.get(b.id);
    if (sab === undefined) throw new Error(`comm thread: unknown staging buffer ${b.id}`);
    return typedView(dtype, sab, 0, b.length);
  }

  private submit(task: Task): void {
    task.group.tasks.add(task);
    if (task.queue === null) { this.active.add(task); return; }
    task.queue.push(task);
    if (task.queue.length === 1) this.active.add(task);
  }

  private finish(task: Task, error: string | null): void {
    const g = task.group;
    // Peers read it when they diagnose a wait (diagnose.ts).
    if (error === null && task.seq > 0) Atomics.store(g.i32, g.geo.doneIndex(g.rank), task.seq);
    g.tasks.delete(task);
    this.active.delete(task);
    if (task.queue !== null) {
      const i = task.queue.indexOf(task);
      if (i >= 0) task.queue.splice(i, 1);
      if (i === 0 && task.queue.length > 0) this.active.add(task.queue[0]!);
    }
    if (task.recv !== null) {
      const box = g.inbox[task.recv.src]!;
      const i = box.posted.indexOf(task.recv.entry);
      if (i >= 0) box.posted.splice(i, 1);
      // A receive that fails mid-message leaves the rest to be drained and dropped.
      if (box.cur !== null && box.cur.entry === task.recv.entry) { box.cur.entry = null; box.cur.sink = null; }
    }
    this.post({ type: 'done', id: task.id, error, at: now() });
  }

  /** After a timeout or a broken protocol nothing in the group can be trusted: fail all of it. */
  private breakGroup(g: Group, reason: string, cause: Task): void {
    g.broken = reason;
    this.finish(cause, reason);
    for (const task of [...g.tasks]) this.finish(task, `${g.who(g.rank)}: ${task.desc} not run: the group is unusable after an earlier failure (${reason})`);
  }

  private abortMessage(g: Group, desc: string, a: { rank: number; reason: string }): string {
    const dead = g.gid === 0 ? `rank ${a.rank}` : `world rank ${a.rank}`;
    return `${g.who(g.rank)}: ${desc} aborted: ${dead} failed: ${a.reason}`;
  }

  private checkAbort(): void {
    if (this.abortSeen) return;
    const a = this.control.aborted();
    if (a === null) return;
    this.abortSeen = true;
    this.failAll((task) => this.abortMessage(task.group, task.desc, a));
  }

  /** Another rank of the launch timed out: this rank dumps its flight recorder too. */
  private checkTimeoutElsewhere(): void {
    if (this.flightSent) return;
    const first = this.control.firstTimeout();
    if (first !== null) this.sendFlight(first.reason);
  }

  /** Asks the rank thread to write its flight dump (once), with what each running operation waits for. */
  private sendFlight(reason: string): void {
    if (this.flightSent) return;
    this.flightSent = true;
    const waits: FlightWaitReport[] = [];
    for (const task of this.active) {
      const g = task.group;
      const w = describeWait(task, this.control);
      waits.push({ group: g.name, label: task.label, missing: w.missing, missingWorld: w.missing.map((p) => g.members[p]!), detail: w.detail });
    }
    this.post({ type: 'flight', reason, waits });
  }

  private failAll(reason: (task: Task) => string): void {
    for (const g of this.groups.values()) for (const task of [...g.tasks]) this.finish(task, reason(task));
  }

  private post(m: FromComm): void { this.port.postMessage(m); }
}
