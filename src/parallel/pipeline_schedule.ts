/** Placeholder until the schedules-as-data module lands: compute actions only (gpipe, 1f1b). */
export type ScheduleKind = 'gpipe' | '1f1b' | 'interleaved';
export type Action = { op: 'forward' | 'backward'; mb: number; chunk: number };
export function pipelineTable(kind: ScheduleKind, p: number, m: number, v = 1): { actions: Action[][] } {
  const actions: Action[][] = [];
  for (let r = 0; r < p; r++) {
    const a: Action[] = [];
    if (kind === 'gpipe') {
      for (let i = 0; i < m; i++) a.push({ op: 'forward', mb: i, chunk: 0 });
      for (let i = 0; i < m; i++) a.push({ op: 'backward', mb: i, chunk: 0 });
    } else {
      const warm = Math.min(p - r - 1, m);
      let f = 0; let bk = 0;
      for (; f < warm; f++) a.push({ op: 'forward', mb: f, chunk: 0 });
      while (f < m) { a.push({ op: 'forward', mb: f++, chunk: 0 }); a.push({ op: 'backward', mb: bk++, chunk: 0 }); }
      while (bk < m) a.push({ op: 'backward', mb: bk++, chunk: 0 });
    }
    actions.push(a);
  }
  void v;
  return { actions };
}
