// ActionGen page player: draws every skeleton view (main clip, interpolation strip, seeds gallery) as SVG
// and plays them on ONE clock, so they stay in sync, loop forever and run at the clip's real speed.
//
// Why not Plotly.animate: every view would run its own animation loop (they drift apart and drop to 0.6-0.8x
// speed together), an interrupted animate() rejects its promise (page errors), and gr.Plot blanks the plot
// while a new figure loads. Here a new figure replaces the old one only once it is parsed, in one step.
// The figures are the Plotly figure dicts that actiongen.plots builds (data, frames, layout.meta); the API
// returns the same JSON. A 3D figure (layout.scene) is drawn by plotly.js instead, on the same clock: each
// frame is one Plotly.restyle of the skeleton traces, which leaves the camera alone, so the user can turn
// the view while it plays. plotly.js (window.actiongenPlotlyUrl, set by app.py) is loaded on the first 3D
// figure only: 2D pages never pay for it.
//
// Loaded by each view's js_on_load; the first one defines window.actiongenPlayer.
if (!window.actiongenPlayer) {
  const SVG = 'http://www.w3.org/2000/svg';
  const SEED_MAX = 4294967295;
  // The page state's fields in the order the events send them (see app.py STATE_INPUTS).
  const FIELDS = ['action', 'seed', 'frames', 'mode', 'action_b', 'share_b', 'seed_b', 'alpha', 'steps', 'model'];
  const PLOTLY_CONFIG = {displaylogo: false, responsive: true, scrollZoom: false,
                         modeBarButtonsToRemove: ['toImage', 'resetCameraLastSave3d']};
  const LIMITS = {seed: [0, SEED_MAX, 1], seed_b: [0, SEED_MAX, 1], frames: [16, 300, 1],
                  share_b: [0, 1, 0], alpha: [0, 1, 0], steps: [3, 9, 1]};

  // "M x,y L x,y ..." of a polyline trace whose strokes are separated by nulls, and round dots at its joints.
  const pathOf = (xs, ys) => {
    let d = '', pen = false;
    for (let i = 0; i < xs.length; i++) {
      if (xs[i] === null) { pen = false; continue; }
      d += (pen ? 'L' : 'M') + xs[i] + ',' + ys[i];
      pen = true;
    }
    return d;
  };
  const dotsOf = (xs, ys) => {
    let d = '';
    for (let i = 0; i < xs.length; i++) if (xs[i] !== null) d += 'M' + xs[i] + ',' + ys[i] + 'h0';
    return d;
  };
  const node = (tag, attributes, parent) => {
    const element = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
    if (parent) parent.appendChild(element);
    return element;
  };

  const player = {
    views: {},            // name -> {svg, layers, frames, count, shown, revision, wraps, grid}
    fps: 50 / 3,
    playing: true,
    origin: performance.now(),  // clock time at which frame 0 was shown
    heldFrame: 0,         // the frame shown while paused
    committed: null,      // the last state values sent to the server
    commitAt: null,       // performance.now() of the last commit that changes the main clip
    latencies: [],        // ms from a commit to its clip being drawn (read by the app bench)
    picked: null,         // the seed last clicked in the gallery
    errors: [],

    clock(now) {
      return this.playing ? Math.floor((now - this.origin) * this.fps / 1000) : this.heldFrame;
    },

    mount(name, element, props, watch, trigger) {
      const host = element.querySelector('.ag-view');
      const svg = node('svg', {class: 'ag-svg', preserveAspectRatio: 'xMidYMid meet', role: 'img'}, host);
      const view = {name, host, svg, layers: [], frames: [], count: 0, shown: -1, revision: null, wraps: 0,
                    captions: node('g', {class: 'ag-captions'}, svg), select: node('rect', {class: 'ag-selected'}, svg)};
      this.views[name] = view;
      if (name === 'skeleton') this.mountTransport(element);
      if (name === 'gallery') svg.addEventListener('click', (event) => this.pick(view, event, trigger));
      const show = () => {
        element.classList.toggle('ag-empty', !props.value);  // the strip outside interpolation
        if (props.value) this.attach(view, props.value);
      };
      watch('value', show);
      show();
      if (!this.running) { this.running = true; requestAnimationFrame((now) => this.tick(now)); }
    },

    attach(view, json) {
      let figure;
      try { figure = JSON.parse(json); } catch (error) { return; }
      const revision = figure.layout.datarevision;
      if (revision === view.revision || revision === view.pending) return;
      view.pending = revision;  // a figure still loading plotly.js is dropped if a newer one comes meanwhile
      if (figure.layout.scene) {
        this.attach3d(view, figure).catch((error) => this.errors.push(String(error)));
        return;
      }
      if (view.plot) {  // back from 3D: free the WebGL context
        window.Plotly.purge(view.plot);
        view.plot.remove();
        view.plot = null;
        view.svg.style.display = '';
      }
      this.attachSvg(view, figure);
      this.attached(view, figure);
    },

    loadPlotly() {
      if (!this.plotly) {
        this.plotly = window.Plotly ? Promise.resolve(window.Plotly) : new Promise((resolve, reject) => {
          const script = document.createElement('script');
          script.src = window.actiongenPlotlyUrl;
          script.onload = () => resolve(window.Plotly);
          script.onerror = () => { this.plotly = null; reject(new Error('plotly.js did not load')); };
          document.head.appendChild(script);
        });
      }
      return this.plotly;
    },

    async attach3d(view, figure) {
      const revision = figure.layout.datarevision;
      const Plotly = await this.loadPlotly();
      if (view.pending !== revision) return;
      if (!view.plot) {
        view.plot = document.createElement('div');
        view.plot.className = 'ag-plot3d';
        view.host.appendChild(view.plot);
        view.svg.style.display = 'none';
        // A restyle while the user drags the view resets plotly.js's camera controller, so the drag would not
        // turn it: the pose holds while a pointer is down on the view (the clock runs on) and the camera the
        // drag leaves is kept, since restyles never touch it.
        view.plot.addEventListener('pointerdown', () => { view.dragging = true; });
        window.addEventListener('pointerup', () => { view.dragging = false; });
        window.addEventListener('pointercancel', () => { view.dragging = false; });
      }
      // Without the figure's height, plotly.js fills the view's box (shorter on a phone) instead of spilling
      // over the play controls under it.
      const {height, ...layout} = figure.layout;
      await Plotly.react(view.plot, figure.data, layout, PLOTLY_CONFIG);
      if (view.pending !== revision) return;
      // The skeleton traces' coordinates per frame, as Plotly.restyle takes them.
      view.frames = figure.frames.map((frame) => ({x: frame.data.map((t) => t.x), y: frame.data.map((t) => t.y),
                                                   z: frame.data.map((t) => t.z)}));
      view.count = view.frames.length;
      view.traces = figure.frames[0].traces;
      view.restyling = false;
      this.attached(view, figure);
    },

    attachSvg(view, figure) {
      const meta = figure.layout.meta || {};
      const [x0, x1] = figure.layout.xaxis.range;
      const [yBottom, yTop] = figure.layout.yaxis.range;
      view.svg.setAttribute('viewBox', `${x0} ${yTop} ${x1 - x0} ${yBottom - yTop}`);
      while (view.layers.length < figure.data.length) {
        const group = node('g', {}, view.svg);
        view.layers.push({line: node('path', {class: 'ag-line'}, group), dots: node('path', {class: 'ag-dots'}, group)});
      }
      figure.data.forEach((trace, i) => {
        view.layers[i].line.style.stroke = trace.line.color;
        view.layers[i].dots.style.stroke = trace.line.color;
      });
      view.frames = figure.frames.map((frame) => frame.data.map((t) => [pathOf(t.x, t.y), dotsOf(t.x, t.y)]));
      view.count = view.frames.length;
      view.grid = {x0, y0: yTop, width: (x1 - x0) / (meta.columns || 1), height: (yBottom - yTop) / (meta.rows || 1),
                   columns: meta.columns || 1, seeds: meta.seeds || []};
      view.captions.replaceChildren();
      const fontSize = 0.075 * view.grid.height;
      for (const note of figure.layout.annotations || []) {
        const text = node('text', {x: note.x, y: note.y + 1.1 * fontSize, 'font-size': fontSize, class: 'ag-caption'},
                          view.captions);
        text.textContent = note.text;
      }
      const selected = meta.selected;
      view.select.style.display = selected === null || selected === undefined ? 'none' : '';
      if (selected !== null && selected !== undefined) {
        const g = view.grid;
        for (const [key, value] of Object.entries({x: g.x0 + (selected % g.columns) * g.width,
            y: g.y0 + Math.floor(selected / g.columns) * g.height, width: g.width, height: g.height})) {
          view.select.setAttribute(key, value);
        }
      }
    },

    // Bookkeeping after a figure is on screen: the clock restarts with a new main clip.
    attached(view, figure) {
      const meta = figure.layout.meta || {};
      view.revision = figure.layout.datarevision;
      view.wraps = 0;
      const now = performance.now();
      if (view.name === 'skeleton') {
        this.fps = meta.fps || this.fps;
        if (this.seek) this.seek.max = view.count - 1;
        this.origin = now;  // a new clip starts from its first frame, and every view with it
        this.heldFrame = 0;
        if (this.commitAt !== null) { this.latencies.push(now - this.commitAt); this.commitAt = null; }
      }
      view.shown = -1;
      this.draw(view, this.clock(now));
    },

    draw(view, frame) {
      if (!view.count) return;
      const t = ((frame % view.count) + view.count) % view.count;
      if (t === view.shown) return;
      if (view.plot) {
        // One restyle at a time: a slow machine skips frames instead of queueing them behind the clock.
        if (view.restyling || view.dragging) return;
        view.restyling = true;
        window.Plotly.restyle(view.plot, view.frames[t], view.traces)
          .catch((error) => this.errors.push(String(error)))
          .finally(() => { view.restyling = false; });
      } else {
        view.frames[t].forEach(([line, dots], i) => {
          view.layers[i].line.setAttribute('d', line);
          view.layers[i].dots.setAttribute('d', dots);
        });
      }
      if (t < view.shown) view.wraps += 1;
      view.shown = t;
    },

    tick(now) {
      try {
        const frame = this.clock(now);
        for (const view of Object.values(this.views)) this.draw(view, frame);
        const main = this.views.skeleton;
        if (main && main.count && this.seek) {
          this.seek.value = main.shown;
          this.time.textContent = `frame ${main.shown + 1} / ${main.count} \u00b7 ${(main.shown / this.fps).toFixed(2)} s`;
        }
      } catch (error) {
        this.errors.push(String(error));
      }
      requestAnimationFrame((later) => this.tick(later));
    },

    mountTransport(element) {
      this.button = element.querySelector('.ag-play');
      this.seek = element.querySelector('.ag-seek');
      this.time = element.querySelector('.ag-time');
      this.button.addEventListener('click', () => this.setPlaying(!this.playing));
      this.seek.addEventListener('input', () => {
        this.setPlaying(false);
        this.heldFrame = Number(this.seek.value);
      });
    },

    setPlaying(playing) {
      const now = performance.now();
      if (playing && !this.playing) this.origin = now - this.heldFrame * 1000 / this.fps;
      if (!playing && this.playing) {
        const main = this.views.skeleton;
        this.heldFrame = main && main.count ? main.shown : 0;
      }
      this.playing = playing;
      this.button.textContent = playing ? '\u275a\u275a Pause' : '\u25b6 Play';
      this.button.setAttribute('aria-pressed', String(!playing));
    },

    pick(view, event, trigger) {
      const point = new DOMPoint(event.clientX, event.clientY).matrixTransform(view.svg.getScreenCTM().inverse());
      const g = view.grid;
      const column = Math.floor((point.x - g.x0) / g.width), row = Math.floor((point.y - g.y0) / g.height);
      const index = row * g.columns + column;
      if (column < 0 || column >= g.columns || row < 0 || index >= g.seeds.length) return;
      this.picked = g.seeds[index];
      trigger('select', {index, value: this.picked});
    },

    // Each number clamped (and rounded) to what its field allows, so the server receives exactly what the
    // page shows; an empty or unreadable box keeps the last committed value instead of failing.
    normalise(state) {
      const clean = {...state};
      for (const [field, [low, high, whole]] of Object.entries(LIMITS)) {
        if (!(field in clean)) continue;
        let number = Number(clean[field]);
        if (clean[field] === null || clean[field] === '' || !Number.isFinite(number)) {
          number = this.committed ? this.committed[field] : low;
        }
        clean[field] = Math.min(Math.max(whole ? Math.round(number) : number, low), high);
      }
      return clean;
    },

    // The values an event sends (`overrides`: the random seed, a seed picked in the gallery). A commit that
    // changes the state marks the downloads stale until the files of the new clip arrive.
    commit(values, overrides = {}) {
      const state = this.normalise({...Object.fromEntries(FIELDS.map((field, i) => [field, values[i]])), ...overrides});
      const key = JSON.stringify(state);
      document.body.dataset.model = state.model;  // shows what only one model has (the BVH download, notes)
      if (key !== this.committedKey) {
        this.committedKey = key;
        this.commitAt = performance.now();
        document.querySelector('#downloads')?.classList.add('ag-stale');
      }
      this.committed = state;
      return FIELDS.map((field) => state[field]);
    },

    // What a number box shows after a commit: the value that was sent.
    shown(value, field) {
      return this.normalise({[field]: value})[field];
    },

    // Downloads are clickable only while their files are those of the clip on screen (`file`, the JSON
    // download) and the clip on screen is that of the last committed state (`state`, what /view returned).
    downloadsReady(file, state) {
      const main = this.views.skeleton;
      const name = file && (file.orig_name || file.path || '');
      const same = (a, b) => (typeof a === 'number' ? Math.abs(a - b) < 1e-9 : a === b);
      const fresh = Boolean(main && main.revision && name.split('/').pop().startsWith(main.revision + '.')
                            && state && this.committed && FIELDS.every((f) => same(state[f], this.committed[f])));
      document.querySelector('#downloads')?.classList.toggle('ag-stale', !fresh);
    },
  };
  window.actiongenPlayer = player;
  // The gallery and the random-seed button put a seed into the seed box themselves. Keeping the focus where
  // it is stops the box's blur event from also starting a view of the old seed, which runs beside the new
  // one and whose late reply could replace it on screen.
  document.addEventListener('mousedown', (event) => {
    if (event.target instanceof Element && event.target.closest('#gallery svg, #random-seed')) event.preventDefault();
  });
}
