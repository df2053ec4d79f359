// weft board's page: every run's metrics as uPlot charts, updated live from the server's event
// stream (/api/events), or drawn once from /api/runs with ?static (what `weft board --png`
// screenshots). Plain browser JavaScript, no build step; uPlot is loaded before it.
//
// URL parameters: static (draw once, no live stream), panels=id,id (only these charts),
// title=TEXT (the page heading, and the only chart's title), width=, height= (chart size, px).
(() => {
  'use strict';
  const params = new URLSearchParams(location.search);
  const STATIC = params.has('static');
  const ONLY = params.get('panels') ? params.get('panels').split(',') : null;
  const TITLE = params.get('title');
  const FIXED = { width: Number(params.get('width')) || 0, height: Number(params.get('height')) || 0 };
  const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#7f7f7f'];
  // Keys plotted against the step, grouped into charts. Anything numeric not named here gets a chart of its own.
  const PANELS = [
    { id: 'loss', title: 'Loss (training, and validation dashed)', match: (k) => k === 'loss' || k === 'val_loss' },
    { id: 'lr', title: 'Learning rate', match: (k) => k === 'lr' },
    { id: 'grad_norm', title: 'Gradient norm (before clipping)', match: (k) => k === 'grad_norm' },
    { id: 'throughput', title: 'Throughput (per second, all ranks)', match: (k) => k === 'tokens_per_s' || k === 'examples_per_s' || k === 'examples_s' },
    { id: 'loss_scale', title: 'Loss scale', match: (k) => k === 'loss_scale', log: true },
    { id: 'memory', title: 'Process memory, resident (MiB)', match: (k) => k === 'rss_bytes' || k === 'peak_rss_bytes', scale: 1 / 2 ** 20 },
    { id: 'memory_held', title: 'Memory held by kind (MiB)', match: (k) => /^mem_.*_bytes$/.test(k), scale: 1 / 2 ** 20 },
    { id: 'experts', title: 'Expert load (tokens routed per expert)', match: (k) => /^moe_tokens_e\d+$/.test(k) },
    { id: 'experts_kept', title: 'Tokens kept per expert', match: (k) => /^moe_kept_e\d+$/.test(k) },
    { id: 'expert_balance', title: 'Expert balance (max / mean routed)', match: (k) => k === 'moe_balance' || k === 'moe_balance_worst' },
    { id: 'pipeline', title: 'Pipeline bubble (fraction of the step)', match: (k) => k === 'pipeline_bubble' },
  ];
  const NOT_PLOTTED = new Set(['step', 'elapsed_s']);
  const MAX_NOTICES = 20;
  const DASHES = [undefined, [6, 4], [2, 3], [10, 3, 2, 3], [1, 6], [14, 4]];
  // Steps are integers: tick at 1, 2, 5 x 10^k.
  const STEP_INCRS = [];
  for (let e = 1; e <= 1e9; e *= 10) STEP_INCRS.push(e, 2 * e, 5 * e);

  /** id -> {id, name, file, exists, color, keys: Map(key -> Map(step -> value)), lastStep, rows, skipped} */
  const runs = new Map();
  /** panel id -> {el, plot, signature} */
  const charts = new Map();
  let updates = 0;
  let colorIndex = 0;

  function keyOrder(a, b) {
    // loss before val_loss, expert 2 before expert 10
    const na = a.replace(/\d+$/, ''), nb = b.replace(/\d+$/, '');
    if (na === nb) return Number(a.slice(na.length)) - Number(b.slice(nb.length));
    if (a === 'loss') return -1;
    if (b === 'loss') return 1;
    return a < b ? -1 : 1;
  }

  function panelOf(key) {
    const p = PANELS.find((q) => q.match(key));
    return p ? p.id : key;
  }

  function addRows(run, rows) {
    for (const r of rows) {
      for (const [k, v] of Object.entries(r)) {
        if (NOT_PLOTTED.has(k)) continue;
        let m = run.keys.get(k);
        if (!m) run.keys.set(k, (m = new Map()));
        m.set(r.step, v);
      }
      if (r.step > run.lastStep) run.lastStep = r.step;
    }
    run.rows += rows.length;
  }

  function apply(state, reset) {
    let run = runs.get(state.id);
    if (!run) {
      run = { id: state.id, name: state.name, file: state.file, color: PALETTE[colorIndex++ % PALETTE.length], keys: new Map(), lastStep: -Infinity, rows: 0, skipped: [] };
      runs.set(state.id, run);
    }
    if (reset) { run.keys = new Map(); run.lastStep = -Infinity; run.rows = 0; run.skipped = []; }
    run.exists = state.exists;
    addRows(run, state.rows);
    run.skipped.push(...state.skipped);
  }

  /** The charts the runs' keys call for: [{id, title, log, scale, series: [{run, key}]}], in PANELS order then by key. */
  function panelsNow() {
    const byId = new Map();
    for (const run of runs.values()) {
      for (const key of [...run.keys.keys()].sort(keyOrder)) {
        const id = panelOf(key);
        if (ONLY && !ONLY.includes(id) && !ONLY.includes(key)) continue;
        let p = byId.get(id);
        if (!p) {
          const def = PANELS.find((q) => q.id === id) || { id, title: key };
          p = { id, title: def.title, log: !!def.log, scale: def.scale || 1, series: [] };
          byId.set(id, p);
        }
        p.series.push({ run, key });
      }
    }
    const order = (id) => { const i = PANELS.findIndex((q) => q.id === id); return i < 0 ? PANELS.length : i; };
    return [...byId.values()].sort((a, b) => order(a.id) - order(b.id) || (a.id < b.id ? -1 : 1));
  }

  /** uPlot's columns: the union of the series' steps, and each series' values on it (null where it has none). */
  function columns(p) {
    const steps = new Set();
    for (const s of p.series) for (const x of s.run.keys.get(s.key).keys()) steps.add(x);
    const xs = Float64Array.from(steps).sort();
    const ys = p.series.map((s) => {
      const m = s.run.keys.get(s.key);
      return Array.from(xs, (x) => (m.has(x) ? m.get(x) * p.scale : null));
    });
    return [Array.from(xs), ...ys];
  }

  function fmt(v) {
    if (v === null || v === undefined) return '–';
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(2);
    return Number(v.toPrecision(4)).toString();
  }

  function size(el) {
    if (FIXED.width) return { width: FIXED.width, height: FIXED.height || 360 };
    return { width: Math.max(300, el.clientWidth - 8), height: 260 };
  }

  function options(p, el) {
    const single = runs.size === 1;
    // A run keeps its colour on every chart; its keys on one chart differ by dash, the first solid.
    const keys = [...new Set(p.series.map((s) => s.key))].sort(keyOrder);
    return {
      title: ONLY && ONLY.length === 1 && TITLE ? TITLE : p.title,
      ...size(el),
      scales: { x: { time: false }, y: p.log ? { distr: 3 } : {} },
      axes: [{ label: 'step', incrs: STEP_INCRS }, { size: 64, values: (u, vals) => vals.map(fmt) }],
      series: [
        { label: 'step', value: (u, v) => (v === null ? '–' : String(v)) },
        ...p.series.map((s) => ({
          label: single ? s.key : `${s.run.name} · ${s.key}`,
          stroke: s.run.color,
          width: FIXED.width ? 2 : 1.5,
          dash: DASHES[keys.indexOf(s.key) % DASHES.length],
          spanGaps: true,
          value: (u, v) => fmt(v),
        })),
      ],
      cursor: { drag: { x: true, y: false } },
      legend: { live: !STATIC },
    };
  }

  function render() {
    const want = panelsNow();
    const host = document.getElementById('charts');
    const keep = new Set(want.map((p) => p.id));
    for (const [id, c] of charts) if (!keep.has(id)) { c.plot.destroy(); c.el.remove(); charts.delete(id); }
    for (const p of want) {
      const signature = p.series.map((s) => `${s.run.id}/${s.key}`).join(',');
      let c = charts.get(p.id);
      const data = columns(p);
      if (!c || c.signature !== signature) {
        if (c) c.plot.destroy();
        const el = c ? c.el : document.createElement('div');
        el.className = 'panel';
        el.dataset.panel = p.id;
        el.replaceChildren();
        host.appendChild(el);
        c = { el, signature, plot: null, series: p.series };
        charts.set(p.id, c);
        c.plot = new uPlot(options(p, el), data, el);
      } else {
        c.plot.setData(data);
      }
      c.series = p.series;
      countPoints(c, data);
    }
    // The charts' order follows PANELS even when a later chart appeared first.
    for (const p of want) host.appendChild(charts.get(p.id).el);
    renderRuns();
    renderNotices();
    document.getElementById('empty').hidden = want.length > 0;
    if (want.length === 0) {
      const waiting = [...runs.values()].filter((r) => !r.exists).map((r) => r.file);
      document.getElementById('empty').textContent = waiting.length ? `No metrics yet: waiting for ${waiting.join(', ')}` : 'No metrics yet.';
    }
    document.body.dataset.updates = String(updates);
  }

  function countPoints(c, data) {
    let n = 0;
    for (let i = 1; i < data.length; i++) for (const v of data[i]) if (v !== null) n++;
    c.el.dataset.points = String(n);
  }

  function renderRuns() {
    const host = document.getElementById('runs');
    host.replaceChildren(...[...runs.values()].map((r) => {
      const div = document.createElement('span');
      div.className = 'run';
      div.dataset.run = r.name;
      div.dataset.exists = String(r.exists);
      const sw = document.createElement('span');
      sw.className = 'swatch';
      sw.style.background = r.color;
      const name = document.createElement('b');
      name.textContent = r.name;
      const detail = document.createElement('span');
      detail.className = 'detail';
      const loss = r.keys.get('loss');
      detail.textContent = !r.exists ? `waiting for ${r.file}` : r.rows === 0 ? 'no rows yet' :
        `step ${r.lastStep}${loss && loss.has(r.lastStep) ? `, loss ${fmt(loss.get(r.lastStep))}` : ''}, ${r.rows} rows` +
        (r.skipped.length ? `, ${r.skipped.length} skipped` : '');
      div.append(sw, name, detail);
      return div;
    }));
  }

  function renderNotices() {
    const host = document.getElementById('notices');
    const items = [];
    for (const r of runs.values()) {
      for (const s of r.skipped.slice(0, MAX_NOTICES)) {
        const div = document.createElement('div');
        div.className = 'skipped';
        div.dataset.run = r.name;
        div.dataset.line = String(s.line);
        const code = document.createElement('code');
        code.textContent = s.text;
        div.append(`${r.name}: line ${s.line} skipped (${s.reason}): `, code);
        items.push(div);
      }
      if (r.skipped.length > MAX_NOTICES) {
        const div = document.createElement('div');
        div.textContent = `${r.name}: and ${r.skipped.length - MAX_NOTICES} more lines skipped`;
        items.push(div);
      }
    }
    host.replaceChildren(...items);
  }

  let pending = false;
  function schedule() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; render(); });
  }

  function status(state, text) {
    const el = document.getElementById('status');
    el.dataset.state = state;
    el.textContent = text;
  }

  // What tests (and curious users, from the console) read: each chart's points as drawn.
  window.weftBoard = {
    get updates() { return updates; },
    panels() {
      return [...charts.entries()].map(([id, c]) => ({
        id,
        title: c.plot.title || id,
        series: c.series.map((s, i) => ({
          run: s.run.name,
          key: s.key,
          color: s.run.color,
          points: c.plot.data[0].flatMap((x, j) => (c.plot.data[i + 1][j] === null ? [] : [[x, c.plot.data[i + 1][j]]])),
        })),
      }));
    },
    skipped() { return [...runs.values()].flatMap((r) => r.skipped.map((s) => ({ run: r.name, ...s }))); },
  };

  if (TITLE) { document.title = TITLE; document.getElementById('title').textContent = TITLE; }
  if (STATIC) {
    document.body.classList.add('static');
    document.documentElement.style.background = '#fff';
    fetch('api/runs').then((r) => r.json()).then((snap) => {
      for (const s of snap.runs) apply(s, true);
      updates++;
      render();
      document.body.dataset.ready = '1';
    }).catch((e) => status('disconnected', `could not read the runs: ${e}`));
    return;
  }
  window.addEventListener('resize', () => { for (const c of charts.values()) c.plot.setSize(size(c.el)); });
  const events = new EventSource('api/events');
  events.addEventListener('snapshot', (e) => {
    // A reconnect sends everything again: start over.
    runs.clear();
    colorIndex = 0;
    for (const s of JSON.parse(e.data).runs) apply(s, true);
    updates++;
    status('live', 'live');
    schedule();
  });
  events.addEventListener('update', (e) => {
    const u = JSON.parse(e.data);
    for (const id of u.removed) runs.delete(id);
    for (const s of u.runs) apply(s, s.reset);
    updates++;
    schedule();
  });
  events.onerror = () => status('disconnected', 'disconnected: retrying…');
  events.onopen = () => status('live', 'live');
})();
