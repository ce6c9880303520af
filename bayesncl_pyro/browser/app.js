// The feature browser: one page per view, chosen by the URL hash.
//   #/r/<run>            the dimensions table of a run
//   #/r/<run>/d/<dim>    a dimension: its images, histogram, gate posterior, co-active dimensions
//   #/r/<run>/i/<image>  a test image: its gates, strongest dimensions, nearest images
// Data files are scripts that call BNCL.put(key, value) (file:// pages cannot fetch JSON); the table
// data loads at start, dimension chunks and image shards when a page needs them.
"use strict";

const BNCL = (window.BNCL = {
  store: new Map(),
  waiters: new Map(),
  loading: new Map(),
  timings: {},
  put(key, value) {
    this.store.set(key, value);
    (this.waiters.get(key) || []).forEach((resolve) => resolve(value));
    this.waiters.delete(key);
  },
  get(key) {
    if (this.store.has(key)) return Promise.resolve(this.store.get(key));
    return new Promise((resolve) => {
      if (!this.waiters.has(key)) this.waiters.set(key, []);
      this.waiters.get(key).push(resolve);
    });
  },
  load(key, src) {
    if (this.store.has(key)) return Promise.resolve(this.store.get(key));
    if (!this.loading.has(key)) {
      const promise = new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = src;
        script.onload = () => (this.store.has(key) ? resolve(this.store.get(key)) : reject(new Error(`${src} did not hold ${key}`)));
        script.onerror = () => reject(new Error(`could not load ${src}`));
        document.head.appendChild(script);
      });
      this.loading.set(key, promise);
      promise.catch(() => this.loading.delete(key));
    }
    return this.loading.get(key);
  },
});

// ------------------------------------------------------------------ helpers

const TYPED = { u8: Uint8Array, i8: Int8Array, u16: Uint16Array, i32: Int32Array, u32: Uint32Array, f32: Float32Array };

/** A packed array {dtype, shape, data (base64), scale?} as a typed array (Float32Array when scaled). */
function unpack(packed) {
  const binary = atob(packed.data);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  const codes = new TYPED[packed.dtype](bytes.buffer);
  if (packed.scale === undefined) return codes;
  const values = new Float32Array(codes.length);
  for (let i = 0; i < codes.length; i++) values[i] = codes[i] * packed.scale;
  return values;
}

const esc = (text) => String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const missing = (v) => v === null || v === undefined || Number.isNaN(v);
function fmt(v, digits = 2) {
  if (missing(v)) return "–";
  if (typeof v === "boolean") return v ? "yes" : "no";
  return Number(v).toFixed(digits);
}
const pct = (v, digits = 0) => (missing(v) ? "–" : `${(100 * v).toFixed(digits)} %`);
/** A number with its unit ("2.30 nats"); "–" alone when it is missing. */
const withUnit = (v, unit, digits = 2) => (missing(v) ? "–" : `${fmt(v, digits)} ${unit}`);
/** "not defined: <reason>" for a quantity (a key of the site's words) whose value cannot be computed. */
const notDefined = (key) => (S.site.words.not_defined[key] || "not defined");
/** A cell of a quantity that may be undefined (null): the formatted number, else "not defined" with the reason on hover. */
const orUndefined = (v, key, shown) => (missing(v) ? `<span class="undefined" title="${esc(notDefined(key))}">not defined</span>` : shown(v));
/** A scene factor's name as pages write it, with its unit ("x (px)", "colour"). */
const factorName = (key) => S.site.words.factors[key] || key;
/** A scene factor's value in the unit its name states, the unit said once, by the name (rotation:
 * radians stored, degrees shown; scale: a fraction stored, % shown). */
function factorValue(key, v) {
  if (key === "scale") return fmt(100 * v, 1);
  if (key === "rotation") return (v * 180 / Math.PI).toFixed(0);
  if (key === "x" || key === "y") return fmt(v, 1);
  return fmt(v, 3);
}
/** A number that must not be cut: stays whole beside a label that may be shortened ("…"). */
/** The range of q(gate = 1 | x) in which a gate counts as unsure, in %. */
const unsureRange = () => `${pct(S.site.options.unsure[0])} < q < ${pct(S.site.options.unsure[1])}`;
const labelled = (label, number) => `<span class="fit"><span class="label">${label}</span><span class="num">${number}</span></span>`;

const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
  "#1f77b4", "#aec7e8", "#ff7f0e", "#98df8a", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"];
const classColor = (c) => (c < PALETTE.length ? PALETTE[c] : `hsl(${(c * 137.508) % 360}, 55%, 55%)`);
/** White (q = 0) to green (q = 1): the colour of a gate probability. */
const probColor = (q) => `rgb(${Math.round(245 - 214 * q)}, ${Math.round(245 - 88 * q)}, ${Math.round(245 - 160 * q)})`;

const S = { site: null, runs: [], labels: null, classes: [], tables: [], shards: new Map(), token: 0, firstTable: true };

const dimHref = (r, d) => `#/r/${r}/d/${d}`;
const imageHref = (r, i) => `#/r/${r}/i/${i}`;
const className = (c) => (c >= 0 ? S.classes[c] : "–");

function classLabel(c) {
  return `<span class="swatch" style="background:${classColor(c)}"></span>${esc(className(c))}`;
}

/** An <img> showing test image i, cropped out of its sprite sheet, ``size`` pixels wide. */
function thumb(i, size = 32) {
  const sp = S.site.images.sprite;
  const sheet = Math.floor(i / sp.per_sheet);
  const cell = i % sp.per_sheet;
  const x = (cell % sp.columns) * sp.cell;
  const y = Math.floor(cell / sp.columns) * sp.cell;
  return `<img class="thumb" src="${sp.sheets[sheet]}" alt="test image ${i}" width="${sp.cell}" height="${sp.cell}" ` +
    `style="object-position:-${x}px -${y}px;zoom:${size / sp.cell}">`;
}

function tile(r, i, caption, size = 64) {
  return `<a class="tile" href="${imageHref(r, i)}" title="image ${i}: ${esc(className(S.labels[i]))}">${thumb(i, size)}` +
    `<span>${caption}</span></a>`;
}

function hdiBar(mean, lo, hi) {
  if (missing(mean)) return "";
  const left = 100 * (missing(lo) ? mean : lo);
  const width = Math.max(1, 100 * ((missing(hi) ? mean : hi) - (missing(lo) ? mean : lo)));
  return `<span class="hdi" title="mean ${pct(mean, 1)}, 94 % HDI [${pct(lo, 1)}, ${pct(hi, 1)}]">` +
    `<i style="left:${left}%;width:${width}%"></i><b style="left:calc(${100 * mean}% - 1px)"></b></span>`;
}

function factorBadge(label, score) {
  if (!label) return "–";
  const name = factorName(label);
  const title = missing(score) ? name : `${name}: explains ${pct(score)} of the variance of z`;
  return `<span class="badge ${esc(label)}" title="${esc(title)}">${esc(name)}</span>`;
}

/** What a dimension is about in a few words: its factor label, else its majority class. */
function dimGist(run, d) {
  const c = run.table.columns;
  const parts = [];
  if (c.factor) parts.push(factorBadge(c.factor[d], c.factor_score[d]));
  if (c.majority[d] >= 0) parts.push(`${classLabel(c.majority[d])} ${pct(c.majority_share[d])}`);
  else parts.push(`<span class="badge dead">never active</span>`);
  return parts.join(" ");
}

function runOf(r) {
  const run = S.runs[r];
  if (!run) throw new Error(`there is no run ${r}; this site has ${S.runs.length}`);
  return run;
}

// ------------------------------------------------------------------ data on demand

function dimensionDetails(r, d) {
  const run = runOf(r);
  const chunk = Math.floor(d / run.meta.dims_per_file);
  return BNCL.load(`${run.meta.key}/dims/${chunk}`, `data/${run.meta.key}/dims/${chunk}.js`).then((data) => data.dims[d - data.start]);
}

/** The decoded shard of image i: gated features, gate probabilities and bits, neighbours. */
async function imageShard(r, i) {
  const run = runOf(r);
  const s = Math.floor(i / run.meta.images_per_file);
  const key = `${run.meta.key}/images/${s}`;
  if (!S.shards.has(key)) {
    const raw = await BNCL.load(key, `data/${run.meta.key}/images/${s}.js`);
    const decoded = {
      start: raw.start, count: raw.count, factors: raw.factors,
      gated: unpack(raw.gated), neighbours: unpack(raw.neighbours), similarity: unpack(raw.similarity),
      shared: unpack(raw.shared), shares: unpack(raw.shares), k: raw.neighbours.shape[1], m: raw.shared.shape[2],
    };
    if (raw.gate_probs) {
      decoded.probs = unpack(raw.gate_probs);
      decoded.gateBits = unpack(raw.gate);
      decoded.gateBytes = raw.gate.shape[1];
    }
    S.shards.set(key, decoded);
  }
  return S.shards.get(key);
}

// ------------------------------------------------------------------ the dimensions table

const ROW_HEIGHT = 40;
const OVERSCAN = 8;

function tableColumns(r) {
  const run = runOf(r);
  const c = run.table.columns;
  const cols = [
    { key: "dim", label: "dim", width: 56, value: (d) => d, cell: (d) => `<a href="${dimHref(r, d)}">${d}</a>`,
      title: "output dimension (click a row to open its page)" },
    { key: "preview", label: "top images", width: 150, left: true, cell: (d) => `<span class="strip">${run.table.preview[d].filter((i) => i >= 0).map((i) => thumb(i)).join("")}</span>`,
      title: "the test images on which the gated dimension is largest" },
  ];
  if (c.factor) cols.push({ key: "factor", label: "factor", width: 100, left: true, text: true, value: (d) => c.factor[d],
    cell: (d) => factorBadge(c.factor[d], c.factor_score[d]),
    title: "ground-truth factor (scenes) that best explains the dimension's activation z before the gate" });
  if (c.open_mean) cols.push({ key: "open_mean", label: "posterior open share, HDI", width: 200, value: (d) => c.open_mean[d],
    cell: (d) => `${pct(c.open_mean[d], 1)}${hdiBar(c.open_mean[d], c.open_lo[d], c.open_hi[d])}`,
    title: "posterior open share: the share of test images on which a gate drawn from q is open; posterior mean (the mean of q(gate = 1 | x) over the test images), bar = 94 % HDI" });
  if (c.pi_mean) cols.push({ key: "pi_mean", label: "π, HDI", width: 160, value: (d) => c.pi_mean[d],
    cell: (d) => `${pct(c.pi_mean[d], 1)}${hdiBar(c.pi_mean[d], c.pi_lo[d], c.pi_hi[d])}`,
    title: "posterior of the dimension's global open probability π_d (Beta-Bernoulli prior), in %" });
  if (c.gate_open) cols.push({ key: "gate_open", label: "hard-gate open share", width: 160, value: (d) => c.gate_open[d], cell: (d) => pct(c.gate_open[d], 1),
    title: "hard-gate open share: the share of test images on which the hard test-time gate is open" });
  if (c.unsure) cols.push({ key: "unsure", label: `unsure (${unsureRange()})`, width: 120, value: (d) => c.unsure[d], cell: (d) => pct(c.unsure[d], 1),
    title: `unsure: share of test images on which the dimension's gate is unsure, ${unsureRange()}; a sure gate has q(gate = 1 | x) near 0 or 100 %` });
  cols.push(
    { key: "frequency", label: "active", width: 76, value: (d) => c.frequency[d], cell: (d) => pct(c.frequency[d], 1),
      title: "activation frequency: share of test images on which the gated feature is non-zero (|f| > 1e-5)" },
    { key: "majority_share", label: "majority class", width: 150, left: true, value: (d) => c.majority_share[d],
      cell: (d) => (c.majority[d] >= 0 ? labelled(classLabel(c.majority[d]), pct(c.majority_share[d], 1)) : orUndefined(null, "majority_share")),
      title: "most frequent class among the images that activate the dimension, and its share: the dimension's contribution to semantic consistency" },
    { key: "entropy", label: "class entropy (nats)", width: 150, value: (d) => c.entropy[d], cell: (d) => orUndefined(c.entropy[d], "entropy", fmt),
      title: "entropy (nats) of the classes of the activating images: 0 = one class, ln C = all alike" },
    { key: "mean_activation", label: "mean act.", width: 110, value: (d) => c.mean_activation[d], cell: (d) => orUndefined(c.mean_activation[d], "mean_activation", fmt),
      title: "mean gated activation over the images that activate the dimension" },
  );
  if (c.partner) {
    const other = S.runs[run.table.partner_run];
    cols.push({ key: "partner_r", label: `match in ${other.meta.label}`, width: 160, left: true, value: (d) => c.partner_r[d],
      cell: (d) => (c.partner[d] >= 0 ? labelled(`<a href="${dimHref(run.table.partner_run, c.partner[d])}">d${c.partner[d]}</a>`, `r ${fmt(c.partner_r[d])}${c.partner_mutual[d] ? " ⇄" : ""}`) : "–"),
      title: `best-correlated dimension of ${other.meta.label} over the same test images (⇄: each is the other's best match)` });
  }
  return cols;
}

function tableState(r) {
  if (!S.tables[r]) S.tables[r] = { sort: "dim", dir: 1, text: "", hideDead: false, hideAlways: false, factor: "", cls: "", scroll: 0 };
  return S.tables[r];
}

function visibleRows(r, cols) {
  const run = runOf(r);
  const c = run.table.columns;
  const st = tableState(r);
  const words = st.text.trim().toLowerCase().split(/\s+/).filter(Boolean);
  const rows = [];
  for (let d = 0; d < run.meta.num_dims; d++) {
    if (st.hideDead && c.dead[d]) continue;
    if (st.hideAlways && c.always_open && c.always_open[d]) continue;
    if (st.factor && c.factor[d] !== st.factor) continue;
    if (st.cls !== "" && c.majority[d] !== Number(st.cls)) continue;
    if (words.length) {
      const hay = `d${d} ${c.factor ? c.factor[d] : ""} ${c.majority[d] >= 0 ? className(c.majority[d]) : "dead"}`.toLowerCase();
      if (!words.every((w) => (/^\d+$/.test(w) ? Number(w) === d : hay.includes(w)))) continue;
    }
    rows.push(d);
  }
  const col = cols.find((x) => x.key === st.sort) || cols[0];
  const value = col.value;
  rows.sort((a, b) => {
    const va = value(a);
    const vb = value(b);
    const ma = missing(va);
    const mb = missing(vb);
    if (ma || mb) return ma === mb ? a - b : ma ? 1 : -1;
    const order = col.text ? String(va).localeCompare(String(vb)) : va - vb;
    return order * st.dir || a - b;
  });
  return rows;
}

function renderTable(r) {
  const run = runOf(r);
  const c = run.table.columns;
  const st = tableState(r);
  const cols = tableColumns(r);
  const sum = run.table.summary;
  const info = run.table.info;
  const view = document.getElementById("view");
  const factorOptions = c.factor ? [...new Set(c.factor)].sort() : [];
  const classOptions = [...new Set(c.majority.filter((x) => x >= 0))].sort((a, b) => a - b);
  view.innerHTML = `
    <h1>${esc(run.meta.label)} <small>${esc(info.dataset)} · prior ${esc(info.prior)}${info.estimator ? ` (${esc(info.estimator)})` : ""} · nonneg ${esc(info.nonneg)} · step ${esc(info.step)}</small></h1>
    <div class="summary">
      <span><b>${run.meta.num_dims}</b> dimensions</span><span><b>${S.site.images.count}</b> test images</span>
      <span><b>${sum.dead}</b> never active</span>
      ${run.table.has_gates ? `<span><b>${sum.always_open}</b> gates always open</span><span>hard-gate open share <b>${pct(sum.gate_open, 1)}</b></span>` : "<span>ungated run</span>"}
      <span>semantic consistency <b>${missing(sum.semantic_consistency) ? esc(notDefined("semantic_consistency")) : `${fmt(sum.semantic_consistency, 1)} %`}</b></span><span>sparsity <b>${pct(sum.sparsity, 1)}</b></span>
    </div>
    <details class="help"><summary>How to read this table</summary><dl>${cols.filter((x) => x.title).map((x) => `<dt>${esc(x.label)}</dt><dd>${esc(x.title)}</dd>`).join("")}</dl></details>
    <div class="controls">
      <input id="filter" type="search" placeholder="filter: 17, star, background…" value="${esc(st.text)}">
      <label><input id="hide-dead" type="checkbox" ${st.hideDead ? "checked" : ""}> hide never-active</label>
      ${c.always_open ? `<label><input id="hide-always" type="checkbox" ${st.hideAlways ? "checked" : ""}> hide always-open</label>` : ""}
      ${c.factor ? `<label>factor <select id="factor"><option value="">any</option>${factorOptions.map((f) => `<option ${f === st.factor ? "selected" : ""}>${esc(f)}</option>`).join("")}</select></label>` : ""}
      <label>majority class <select id="cls"><option value="">any</option>${classOptions.map((k) => `<option value="${k}" ${String(k) === st.cls ? "selected" : ""}>${esc(className(k))}</option>`).join("")}</select></label>
      <span id="count"></span>
    </div>
    <div class="scroller" id="scroller"><table class="dims" id="dims" style="min-width:${cols.reduce((s, x) => s + x.width, 0)}px">
      <colgroup>${cols.map((x) => `<col style="width:${x.width}px">`).join("")}</colgroup>
      <thead><tr>${cols.map((x) => `<th data-key="${x.key}" class="${x.value ? "sortable" : ""} ${x.left ? "left" : ""}" title="${esc(x.title || "")}"${x.key === st.sort ? ` aria-sort="${st.dir > 0 ? "ascending" : "descending"}"` : ""}>${esc(x.label)}</th>`).join("")}</tr></thead>
      <tbody id="rows"></tbody></table></div>`;

  const scroller = document.getElementById("scroller");
  const tbody = document.getElementById("rows");
  let rows = visibleRows(r, cols);
  let first = -1;

  const rowHtml = (d) => `<tr class="row${c.dead[d] ? " dead" : ""}" data-dim="${d}">${cols.map((x) => `<td class="${x.left ? "left" : ""}">${x.cell(d)}</td>`).join("")}</tr>`;
  const spacer = (h) => (h > 0 ? `<tr class="spacer"><td colspan="${cols.length}" style="height:${h}px"></td></tr>` : "");
  function paint(force) {
    const top = Math.max(0, Math.floor(scroller.scrollTop / ROW_HEIGHT) - OVERSCAN);
    if (!force && top === first) return;
    first = top;
    const count = Math.ceil(scroller.clientHeight / ROW_HEIGHT) + 2 * OVERSCAN;
    const last = Math.min(rows.length, top + count);
    tbody.innerHTML = spacer(top * ROW_HEIGHT) + rows.slice(top, last).map(rowHtml).join("") + spacer((rows.length - last) * ROW_HEIGHT);
  }
  function refresh() {
    const t0 = performance.now();
    rows = visibleRows(r, cols);
    document.getElementById("count").textContent = `showing ${rows.length} of ${run.meta.num_dims} dimensions`;
    scroller.dataset.rows = rows.length;
    paint(true);
    return performance.now() - t0;
  }
  function fit() {
    scroller.style.height = `${Math.max(240, window.innerHeight - scroller.getBoundingClientRect().top - window.scrollY - 36)}px`;
  }
  fit();
  refresh();
  scroller.scrollTop = st.scroll;
  paint(true);

  let pending = false;
  scroller.addEventListener("scroll", () => {
    st.scroll = scroller.scrollTop;
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      const t0 = performance.now();
      paint(false);
      BNCL.timings.scroll = performance.now() - t0;
    });
  });
  window.onresize = () => { fit(); paint(true); };
  view.querySelector("thead").addEventListener("click", (event) => {
    const th = event.target.closest("th.sortable");
    if (!th) return;
    const key = th.dataset.key;
    st.dir = st.sort === key ? -st.dir : key === "dim" || cols.find((x) => x.key === key).text ? 1 : -1;
    st.sort = key;
    view.querySelectorAll("thead th").forEach((h) => h.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", st.dir > 0 ? "ascending" : "descending");
    BNCL.timings.sort = refresh();
  });
  tbody.addEventListener("click", (event) => {
    if (event.target.closest("a")) return;
    const tr = event.target.closest("tr.row");
    if (tr) location.hash = dimHref(r, tr.dataset.dim);
  });
  const on = (id, what, apply) => { const el = document.getElementById(id); if (el) el.addEventListener(what, () => { apply(el); scroller.scrollTop = 0; refresh(); }); };
  on("filter", "input", (el) => { st.text = el.value; });
  on("hide-dead", "change", (el) => { st.hideDead = el.checked; });
  on("hide-always", "change", (el) => { st.hideAlways = el.checked; });
  on("factor", "change", (el) => { st.factor = el.value; });
  on("cls", "change", (el) => { st.cls = el.value; });
}

// ------------------------------------------------------------------ charts (SVG strings)

/** Horizontal bars with HDI whiskers, one per class: the dimension's posterior open share by class (in %). */
function classOpenChart(mean, lo, hi, overall) {
  const rowH = 16;
  const labelW = 110;
  const barW = 250;
  const order = [...mean.keys()];
  const h = order.length * rowH + 24;
  let body = "";
  order.forEach((k, row) => {
    const y = row * rowH + 4;
    const m = mean[k];
    body += `<text x="${labelW - 6}" y="${y + 11}" text-anchor="end">${esc(className(k))}</text>`;
    if (missing(m)) { body += `<text x="${labelW + 4}" y="${y + 11}" fill="#999">no images</text>`; return; }
    body += `<rect x="${labelW}" y="${y + 2}" width="${barW * m}" height="${rowH - 5}" fill="${classColor(k)}" opacity=".55"><title>${esc(className(k))}: ${pct(m, 1)}${lo ? ` [${pct(lo[k], 1)}, ${pct(hi[k], 1)}]` : ""}</title></rect>`;
    if (lo && !missing(lo[k])) body += `<line x1="${labelW + barW * lo[k]}" x2="${labelW + barW * hi[k]}" y1="${y + 7}" y2="${y + 7}" stroke="#222" stroke-width="1.6"/>`;
    body += `<text x="${labelW + barW + 6}" y="${y + 11}">${pct(m, 1)}</text>`;
  });
  const axisY = order.length * rowH + 6;
  let axis = `<line class="axis" x1="${labelW}" x2="${labelW + barW}" y1="${axisY}" y2="${axisY}"/>`;
  [0, 0.5, 1].forEach((t) => { axis += `<text x="${labelW + barW * t}" y="${axisY + 13}" text-anchor="middle">${pct(t)}</text>`; });
  if (!missing(overall)) axis += `<line x1="${labelW + barW * overall}" x2="${labelW + barW * overall}" y1="0" y2="${axisY}" stroke="#1a4fa8" stroke-dasharray="3 2"><title>all images: ${pct(overall, 1)}</title></line>`;
  return `<svg width="${labelW + barW + 64}" height="${h}" role="img" aria-label="posterior open share by class">${body}${axis}</svg>`;
}

/** Stacked histogram of the active values, one colour per class. */
function histogramChart(hist) {
  const counts = hist.counts;
  const bins = counts[0].length;
  const totals = Array.from({ length: bins }, (_, b) => counts.reduce((s, row) => s + row[b], 0));
  const top = Math.max(1, ...totals);
  const W = 400;
  const H = 150;
  const left = 36;
  const bw = (W - left) / bins;
  let body = "";
  for (let b = 0; b < bins; b++) {
    let y = H;
    counts.forEach((row, k) => {
      if (!row[b]) return;
      const h = (row[b] / top) * (H - 10);
      y -= h;
      body += `<rect x="${left + b * bw + 0.5}" y="${y}" width="${bw - 1}" height="${h}" fill="${classColor(k)}"><title>${esc(className(k))}: ${row[b]} images with activation in [${fmt(hist.edges[b], 3)}, ${fmt(hist.edges[b + 1], 3)})</title></rect>`;
    });
  }
  const axis = `<line class="axis" x1="${left}" x2="${W}" y1="${H}" y2="${H}"/><line class="axis" x1="${left}" x2="${left}" y1="0" y2="${H}"/>` +
    `<text x="${left - 4}" y="10" text-anchor="end">${top}</text><text x="${left - 4}" y="${H}" text-anchor="end">0</text>` +
    `<text x="${left}" y="${H + 13}">${fmt(hist.edges[0], 3)}</text><text x="${W}" y="${H + 13}" text-anchor="end">${fmt(hist.edges[bins], 3)}</text>` +
    `<text x="${(left + W) / 2}" y="${H + 13}" text-anchor="middle">activation</text>`;
  return `<svg width="${W + 4}" height="${H + 18}" role="img" aria-label="activation histogram by class">${body}${axis}</svg>`;
}

/** Bars of how many images have each value of q(gate = 1 | x), with the gate's threshold. */
function probabilityChart(counts, threshold) {
  const W = 300;
  const H = 70;
  const left = 36;
  const bw = (W - left) / counts.length;
  const top = Math.max(1, ...counts);
  const bars = counts.map((n, b) => `<rect x="${left + b * bw + 0.5}" y="${H - (n / top) * (H - 6)}" width="${bw - 1}" height="${(n / top) * (H - 6)}" fill="#59a14f"><title>${n} images with q in [${pct(b / counts.length)}, ${pct((b + 1) / counts.length)})</title></rect>`).join("");
  const x = left + (W - left) * threshold;
  return `<svg width="${W + 4}" height="${H + 16}" role="img" aria-label="gate probabilities">${bars}` +
    `<line class="axis" x1="${left}" x2="${W}" y1="${H}" y2="${H}"/><line x1="${x}" x2="${x}" y1="0" y2="${H}" stroke="#c0392b" stroke-dasharray="3 2"><title>threshold ${pct(threshold)}</title></line>` +
    `<text x="${left - 4}" y="10" text-anchor="end">${top}</text><text x="${left}" y="${H + 13}">0 %</text><text x="${W}" y="${H + 13}" text-anchor="end">100 %</text>` +
    `<text x="${(left + W) / 2}" y="${H + 13}" text-anchor="middle">q(gate = 1 | x)</text></svg>`;
}

function barsChart(names, values, color = "#7d9fd6") {
  const rowH = 17;
  const labelW = 90;
  const barW = 240;
  const body = names.map((name, k) => {
    const v = values[k];
    const y = k * rowH;
    return `<text x="${labelW - 6}" y="${y + 12}" text-anchor="end">${esc(name)}</text>` +
      (missing(v) ? `<text x="${labelW + 4}" y="${y + 12}" fill="#999">not defined</text>` :
        `<rect x="${labelW}" y="${y + 3}" width="${barW * Math.max(0, Math.min(1, v))}" height="${rowH - 6}" fill="${color}"/><text x="${labelW + barW * Math.max(0, Math.min(1, v)) + 5}" y="${y + 12}">${pct(v, 1)}</text>`);
  }).join("");
  return `<svg width="${labelW + barW + 64}" height="${names.length * rowH + 4}">${body}</svg>`;
}

// ------------------------------------------------------------------ a dimension's page

async function renderDimension(r, d, token) {
  const run = runOf(r);
  if (!(d >= 0 && d < run.meta.num_dims)) throw new Error(`dimension ${d} does not exist; ${run.meta.label} has dimensions 0–${run.meta.num_dims - 1}`);
  const det = await dimensionDetails(r, d);
  if (token !== S.token) return;
  const c = run.table.columns;
  const opts = S.site.options;
  const cards = [];

  // Is its gate sure?
  if (run.table.has_gates) {
    let gate = `<p>`;
    if (c.open_mean) gate += `Posterior open share <b>${pct(c.open_mean[d], 1)}</b>, 94 % HDI [${pct(c.open_lo[d], 1)}, ${pct(c.open_hi[d], 1)}]${hdiBar(c.open_mean[d], c.open_lo[d], c.open_hi[d])}<br>`;
    else gate += `Posterior open share (mean q(gate = 1 | x) over the test images) <b>${pct(c.gate_prob[d], 1)}</b><br>`;
    if (c.pi_mean) gate += `Global open probability π_d: <b>${pct(c.pi_mean[d], 1)}</b>, 94 % HDI [${pct(c.pi_lo[d], 1)}, ${pct(c.pi_hi[d], 1)}]<br>`;
    gate += `Hard-gate open share <b>${pct(c.gate_open[d], 1)}</b> of test images; ` +
      `unsure (${unsureRange()}) on <b>${pct(c.unsure[d], 1)}</b>.</p>`;
    if (det.gate_prob_histogram) gate += `<p class="note">q(gate = 1 | x) over the test images: a sure gate piles up at 0 and 100 %.</p>` + probabilityChart(det.gate_prob_histogram, run.table.info.threshold ?? 0.5);
    if (det.class_open) gate += `<p class="note">By class: posterior open share, mean and 94 % HDI (dashed: all images).</p>` + classOpenChart(det.class_open.mean, det.class_open.lo, det.class_open.hi, c.open_mean ? c.open_mean[d] : null);
    else if (det.class_gate_prob) gate += `<p class="note">By class: posterior open share (mean q(gate = 1 | x)).</p>` + classOpenChart(det.class_gate_prob, null, null, c.gate_prob[d]);
    cards.push(`<section class="card" id="dim-gate"><h2>Is its gate sure?</h2>${gate}</section>`);
  } else {
    cards.push(`<section class="card" id="dim-gate"><h2>Gate</h2><p class="note">This run has no gates (features = normalize(z)).</p></section>`);
  }

  const topTiles = det.top.map((i, k) => tile(r, i, `${fmt(det.top_values[k], 3)}<br>${esc(className(S.labels[i]))}`)).join("");
  cards.push(`<section class="card" id="dim-top"><h2>Top ${det.top.length} activating test images</h2>` +
    (det.top.length ? `<div class="tiles">${topTiles}</div>` : `<p class="note">The gated dimension is never active on the test set.</p>`) + `</section>`);
  cards.push(`<section class="card" id="dim-sample"><h2>Random activating images</h2><p class="note">A uniform sample of the ${Math.round(c.frequency[d] * S.site.images.count)} images on which it is active: what it responds to beyond its extremes.</p>` +
    (det.sample.length ? `<div class="tiles">${det.sample.map((i) => tile(r, i, esc(className(S.labels[i])))).join("")}</div>` : "") + `</section>`);

  const inactive = det.histogram.inactive.reduce((s, v) => s + v, 0);
  const present = det.class_counts.map((n, k) => [n, k]).filter(([n]) => n > 0).sort((a, b) => b[0] - a[0]);
  const legend = present.slice(0, 12).map(([n, k]) => `<span class="chip">${classLabel(k)} ${n}</span>`).join("") + (present.length > 12 ? `<span class="chip">+${present.length - 12} classes</span>` : "");
  cards.push(`<section class="card" id="dim-histogram"><h2>Activation by class</h2><p class="note">Active images only (${S.site.images.count - inactive}); inactive on ${inactive}. Class entropy ${missing(c.entropy[d]) ? esc(notDefined("entropy")) : withUnit(c.entropy[d], "nats")}.</p>` +
    (inactive < S.site.images.count ? histogramChart(det.histogram) : "") + `<div class="chips">${legend}</div></section>`);

  const coRows = det.coactive.dims.map((e, k) => `<tr><td><a href="${dimHref(r, e)}">d${e}</a></td><td>${fmt(det.coactive.similarity[k])}</td><td>${dimGist(run, e)}</td>` +
    `<td><span class="strip">${run.table.preview[e].filter((i) => i >= 0).map((i) => thumb(i)).join("")}</span></td></tr>`).join("");
  cards.push(`<section class="card wide" id="dim-coactive"><h2>Fires together with</h2><p class="note">Nearest dimensions by co-activation: cosine of the two dimensions' activations over the test images.</p>` +
    (coRows ? `<div class="table-fit"><table class="plain"><tr><th>dim</th><th>cosine</th><th>about</th><th>top images</th></tr>${coRows}</table></div>` : `<p class="note">none (never active)</p>`) + `</section>`);

  if (det.factor_scores) {
    cards.push(`<section class="card" id="dim-factors"><h2>Ground-truth factors</h2><p class="note">Share of the variance of z (before the gate) each known factor explains (adjusted correlation ratio ε², in %); label: ${factorBadge(c.factor[d], c.factor_score[d])}</p>` +
      barsChart(run.table.factor_names, det.factor_scores) + `</section>`);
  }

  if (c.partner) {
    const o = run.table.partner_run;
    const other = S.runs[o];
    const p = c.partner[d];
    cards.push(`<section class="card" id="dim-match"><h2>Best match in ${esc(other.meta.label)}</h2>` + (p >= 0
      ? `<p><a href="${dimHref(o, p)}">dimension ${p}</a>: correlation r = <b>${fmt(c.partner_r[d], 3)}</b>${c.partner_mutual[d] ? " — mutual best match" : ` (its own best match here is d${other.table.columns.partner[p]})`}. ${dimGist(other, p)}</p>` +
        `<div class="tiles">${other.table.preview[p].filter((i) => i >= 0).map((i) => tile(o, i, esc(className(S.labels[i])), 48)).join("")}</div>` +
        `<p class="note">Side by side with this dimension's top images:</p><div class="tiles">${det.top.slice(0, 4).map((i) => tile(r, i, esc(className(S.labels[i])), 48)).join("")}</div>`
      : `<p class="note">No match: the dimension never varies on the test set.</p>`) + `</section>`);
  }

  if (run.table.has_gates && det.top_z.length) {
    cards.push(`<section class="card" id="dim-ungated"><details><summary><b>Before the gate</b>: top images by z</summary><p class="note">What the projector output encodes whether or not the gate lets it through.</p>` +
      `<div class="tiles">${det.top_z.slice(0, opts.top_k).map((i, k) => tile(r, i, `${fmt(det.top_z_values[k], 3)}<br>${esc(className(S.labels[i]))}`)).join("")}</div></details></section>`);
  }

  const n = run.meta.num_dims;
  document.getElementById("view").innerHTML = `
    <h1>Dimension ${d} <small>of ${esc(run.meta.label)}</small>
      <span class="pager"><a href="${dimHref(r, (d + n - 1) % n)}">← d${(d + n - 1) % n}</a><a href="${dimHref(r, (d + 1) % n)}">d${(d + 1) % n} →</a><a href="#/r/${r}">all dimensions</a></span></h1>
    <div class="facts">
      <span>${dimGist(run, d)}</span><span>active on ${pct(c.frequency[d], 1)} of test images</span>
      <span>class entropy ${missing(c.entropy[d]) ? esc(notDefined("entropy")) : withUnit(c.entropy[d], "nats")}</span><span>mean activation ${missing(c.mean_activation[d]) ? esc(notDefined("mean_activation")) : fmt(c.mean_activation[d], 3)}</span>
      ${c.open_mean ? `<span>posterior open share ${pct(c.open_mean[d], 1)} [${pct(c.open_lo[d], 1)}, ${pct(c.open_hi[d], 1)}]</span>` : ""}
    </div>
    <div class="grid">${cards.join("")}</div>`;
}

// ------------------------------------------------------------------ an image's page

async function renderImage(r, i, token) {
  const run = runOf(r);
  const count = S.site.images.count;
  if (!(i >= 0 && i < count)) throw new Error(`image ${i} does not exist; the test split has images 0–${count - 1}`);
  const shard = await imageShard(r, i);
  if (token !== S.token) return;
  const D = run.meta.num_dims;
  const row = i - shard.start;
  const f = shard.gated.subarray(row * D, (row + 1) * D);
  const c = run.table.columns;
  const cards = [];

  const factorRows = Object.entries(shard.factors).map(([name, values]) => {
    const v = values[row];
    const names = S.site.images.factor_names[name];
    return `<tr><th>${esc(factorName(name))}</th><td>${names ? esc(names[v]) : factorValue(name, v)}</td></tr>`;
  }).join("");
  cards.push(`<section class="card" id="image-info"><h2>Test image ${i}</h2><div style="display:flex;gap:1em;align-items:flex-start">${thumb(i, 128)}` +
    `<table class="plain"><tr><th>class</th><td>${classLabel(S.labels[i])}</td></tr>${factorRows}</table></div>` +
    (S.runs.length > 1 ? `<p>${S.runs.map((o, k) => (k === r ? "" : `<a href="${imageHref(k, i)}">this image in ${esc(o.meta.label)}</a>`)).join("")}</p>` : "") + `</section>`);

  if (shard.probs) {
    const q = shard.probs.subarray(row * D, (row + 1) * D);
    const isOpen = (d) => (shard.gateBits[row * shard.gateBytes + (d >> 3)] >> (7 - (d & 7))) & 1;
    const open = [...Array(D).keys()].filter(isOpen).sort((a, b) => q[b] - q[a]);
    const [low, high] = S.site.options.unsure;
    const unsure = [...Array(D).keys()].filter((d) => q[d] > low && q[d] < high).length;
    const columns = Math.min(32, Math.ceil(Math.sqrt(D * 2)));
    const map = [...Array(D).keys()].map((d) => `<a href="${dimHref(r, d)}" class="${isOpen(d) ? "on" : ""}" style="background:${probColor(q[d])}" title="d${d}: q = ${pct(q[d], 1)}${isOpen(d) ? ", open" : ", closed"}"></a>`).join("");
    cards.push(`<section class="card" id="image-gates"><h2>Gates: ${open.length} of ${D} open</h2>` +
      `<p class="note">Every dimension's q(gate = 1 | x), white 0 % → green 100 %, outlined when the hard gate is open; ${unsure} gate${unsure === 1 ? " is" : "s are"} unsure (${unsureRange()}).</p>` +
      `<div class="gatemap" style="grid-template-columns:repeat(${columns}, minmax(6px, 18px))">${map}</div>` +
      `<div class="chips" id="open-gates">${open.map((d) => `<a class="chip open-gate" href="${dimHref(r, d)}" style="background:${probColor(q[d])}" title="${esc(c.factor ? c.factor[d] : className(c.majority[d]))}">d${d} · ${pct(q[d])}</a>`).join("")}</div></section>`);
  } else {
    cards.push(`<section class="card" id="image-gates"><h2>Gates</h2><p class="note">This run has no gates.</p></section>`);
  }

  const strongest = [...Array(D).keys()].filter((d) => f[d] !== 0).sort((a, b) => Math.abs(f[b]) - Math.abs(f[a])).slice(0, 12);
  const q = shard.probs ? shard.probs.subarray(row * D, (row + 1) * D) : null;
  cards.push(`<section class="card wide" id="image-strongest"><h2>Strongest dimensions</h2><p class="note">Largest gated activations of this image, with what each dimension is about.</p>` +
    (strongest.length ? `<div class="table-fit"><table class="plain"><tr><th>dim</th><th>activation</th>${q ? "<th>q(gate = 1 | x)</th>" : ""}<th>about</th><th>its top images</th></tr>` +
      strongest.map((d) => `<tr><td><a href="${dimHref(r, d)}">d${d}</a></td><td>${fmt(f[d], 3)}</td>${q ? `<td>${pct(q[d], 1)}</td>` : ""}<td>${dimGist(run, d)}</td>` +
        `<td><span class="strip">${run.table.preview[d].filter((j) => j >= 0).map((j) => thumb(j)).join("")}</span></td></tr>`).join("") + `</table></div>`
      : `<p class="note">Every gated feature of this image is zero.</p>`) + `</section>`);
  cards.splice(1, 0, cards.pop()); // beside the image, before its gates: the wide card leads

  const nn = [];
  for (let k = 0; k < shard.k; k++) {
    const j = shard.neighbours[row * shard.k + k];
    if (j < 0) continue;
    const chips = [];
    for (let s = 0; s < shard.m; s++) {
      const at = (row * shard.k + k) * shard.m + s;
      const d = shard.shared[at];
      if (d >= 0) chips.push(`<a class="chip" href="${dimHref(r, d)}" title="${esc(c.factor ? c.factor[d] : className(c.majority[d]))}">d${d} ${pct(shard.shares[at])}</a>`);
    }
    nn.push(`<div class="neighbour">${tile(r, j, `#${j}`, 56)}<div class="meta">${classLabel(S.labels[j])}${S.labels[j] === S.labels[i] ? " (same class)" : ""}<br>` +
      `cosine ${fmt(shard.similarity[row * shard.k + k], 3)}<div class="chips">${chips.join("") || '<span class="note">no shared dimension</span>'}</div></div></div>`);
  }
  cards.push(`<section class="card" id="image-neighbours"><h2>Nearest test images</h2><p class="note">By cosine of the gated features; the chips are the dimensions that carry the similarity (share of the cosine): why these images are similar.</p>${nn.join("")}</section>`);

  document.getElementById("view").innerHTML = `
    <h1>Image ${i} <small>in ${esc(run.meta.label)}</small>
      <span class="pager"><a href="${imageHref(r, (i + count - 1) % count)}">← ${(i + count - 1) % count}</a><a href="${imageHref(r, (i + 1) % count)}">${(i + 1) % count} →</a><a href="${imageHref(r, Math.floor(Math.random() * count))}">random</a><a href="#/r/${r}">all dimensions</a></span></h1>
    <div class="grid">${cards.join("")}</div>`;
}

// ------------------------------------------------------------------ routing

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean);
  const route = { run: 0, kind: "table", index: null };
  if (parts[0] === "r") { route.run = Number(parts[1]); parts.splice(0, 2); }
  if (parts[0] === "d" || parts[0] === "i") { route.kind = parts[0] === "d" ? "dimension" : "image"; route.index = Number(parts[1]); }
  return route;
}

async function route() {
  const t0 = performance.now();
  const token = ++S.token;
  const route = parseRoute();
  const view = document.getElementById("view");
  document.body.dataset.rendered = "";
  try {
    runOf(route.run);
    document.querySelectorAll("#runs a").forEach((a, k) => a.classList.toggle("current", k === route.run));
    if (route.kind !== "table") window.onresize = null;
    if (route.kind === "table") renderTable(route.run);
    else if (route.kind === "dimension") await renderDimension(route.run, route.index, token);
    else await renderImage(route.run, route.index, token);
    if (route.kind !== "table") window.scrollTo(0, 0);
  } catch (error) {
    if (token !== S.token) return;
    view.innerHTML = `<p class="error">${esc(error.message)}</p><p><a href="#/">back to the dimensions table</a></p>`;
    console.warn(error);
  }
  if (token !== S.token) return;
  const elapsed = performance.now() - t0;
  BNCL.timings[route.kind] = elapsed;
  document.body.dataset.view = route.kind;
  document.body.dataset.rendered = location.hash || "#/";
  if (route.kind === "table" && S.firstTable) {
    S.firstTable = false;
    BNCL.timings.tableRendered = performance.now();
    performance.mark("bncl-table-rendered");
    requestAnimationFrame(() => setTimeout(() => {
      BNCL.timings.tablePainted = performance.now();
      performance.mark("bncl-table-painted");
    }, 0));
  }
}

async function start() {
  const site = await BNCL.get("site");
  S.site = site;
  S.classes = site.images.classes;
  S.labels = unpack(site.images.labels);
  document.title = site.title;
  const tables = await Promise.all(site.runs.map((meta) => BNCL.load(`${meta.key}/table`, `data/${meta.key}/table.js`)));
  S.runs = site.runs.map((meta, r) => ({ meta, table: tables[r] }));
  document.getElementById("runs").innerHTML = S.runs.length > 1
    ? S.runs.map((run, r) => `<a href="#/r/${r}">${esc(run.meta.label)}</a>`).join("") : `<span>${esc(S.runs[0].meta.label)}</span>`;
  const current = () => parseRoute().run || 0;
  document.getElementById("goto-dim").addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = dimHref(current(), event.target.index.value);
  });
  document.getElementById("goto-image").addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = imageHref(current(), event.target.index.value);
  });
  window.addEventListener("hashchange", route);
  await route();
}

start().catch((error) => {
  document.getElementById("view").innerHTML = `<p class="error">The browser's data could not be read: ${esc(error.message)}</p>`;
  console.error(error);
});
