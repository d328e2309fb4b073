/* A small time-series chart on <canvas>: lines, shaded bands, bars, grid and axes.
   No dependencies, no network. Used by app.js as window.SRChart.draw(canvas, spec). */
(function () {
  "use strict";

  function niceStep(range, ticks) {
    const raw = range / Math.max(1, ticks);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    const step = norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10;
    return step * mag;
  }

  function fitCanvas(canvas) {
    const dpr = window.devicePixelRatio || 1;
    const rect = canvas.getBoundingClientRect();
    const w = Math.max(1, Math.round(rect.width * dpr));
    const h = Math.max(1, Math.round(rect.height * dpr));
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    return { ctx: ctx, width: rect.width, height: rect.height };
  }

  function timeLabel(ms) {
    const d = new Date(ms);
    const p = (n) => String(n).padStart(2, "0");
    return p(d.getUTCHours()) + ":" + p(d.getUTCMinutes()) + ":" + p(d.getUTCSeconds());
  }

  /* spec: { x: [ms...], lines: [{y: [...], color, width}], bands: [{lo: [...], hi: [...], color}],
           bars: [{y: [...], color, max}], yFormat: fn, empty: "text" } */
  function draw(canvas, spec) {
    const fit = fitCanvas(canvas);
    const ctx = fit.ctx, W = fit.width, H = fit.height;
    ctx.clearRect(0, 0, W, H);
    const style = getComputedStyle(document.documentElement);
    const muted = style.getPropertyValue("--muted").trim() || "#8394ad";
    const grid = style.getPropertyValue("--line").trim() || "#223049";
    const xs = spec.x || [];
    if (xs.length < 2) {
      ctx.fillStyle = muted;
      ctx.font = "12px system-ui, sans-serif";
      ctx.textAlign = "center";
      ctx.fillText(spec.empty || "waiting for data", W / 2, H / 2);
      return false;
    }
    const pad = { l: 64, r: 12, t: 10, b: 22 };
    let lo = Infinity, hi = -Infinity;
    const scan = (arr) => arr.forEach((v) => { if (Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); } });
    (spec.lines || []).forEach((l) => scan(l.y));
    (spec.bands || []).forEach((b) => { scan(b.lo); scan(b.hi); });
    if (!Number.isFinite(lo)) return false;
    if (hi - lo < 1e-12) { hi += Math.abs(hi) * 0.01 + 1e-9; lo -= Math.abs(lo) * 0.01 + 1e-9; }
    const margin = (hi - lo) * 0.06; lo -= margin; hi += margin;
    if (spec.floorZero && lo < 0) lo = 0;
    const x0 = xs[0], x1 = xs[xs.length - 1] === x0 ? x0 + 1 : xs[xs.length - 1];
    const px = (i) => pad.l + ((xs[i] - x0) / (x1 - x0)) * (W - pad.l - pad.r);
    const py = (v) => pad.t + (1 - (v - lo) / (hi - lo)) * (H - pad.t - pad.b);

    // grid + y axis
    ctx.font = "11px ui-monospace, Menlo, Consolas, monospace";
    ctx.fillStyle = muted; ctx.strokeStyle = grid; ctx.lineWidth = 1;
    const step = niceStep(hi - lo, 5);
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) {
      const y = Math.round(py(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(pad.l, y); ctx.lineTo(W - pad.r, y); ctx.stroke();
      ctx.fillText(spec.yFormat ? spec.yFormat(v) : v.toFixed(2), pad.l - 8, y);
    }
    // x axis labels
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    const nx = Math.max(2, Math.floor((W - pad.l - pad.r) / 110));
    for (let k = 0; k <= nx; k++) {
      const t = x0 + ((x1 - x0) * k) / nx;
      const x = pad.l + ((t - x0) / (x1 - x0)) * (W - pad.l - pad.r);
      ctx.fillText(timeLabel(t), Math.min(Math.max(x, pad.l + 24), W - pad.r - 24), H - pad.b + 6);
    }
    // bars (scaled to their own max, drawn along the bottom third)
    (spec.bars || []).forEach((b) => {
      const max = b.max || Math.max.apply(null, b.y.filter(Number.isFinite).concat([1e-12]));
      const bw = Math.max(1, (W - pad.l - pad.r) / xs.length - 1);
      ctx.fillStyle = b.color;
      b.y.forEach((v, i) => {
        if (!Number.isFinite(v) || v <= 0) return;
        const h = (v / max) * (H - pad.t - pad.b) * 0.33;
        ctx.fillRect(px(i) - bw / 2, H - pad.b - h, bw, h);
      });
    });
    // bands
    (spec.bands || []).forEach((b) => {
      ctx.beginPath();
      xs.forEach((_, i) => { const x = px(i), y = py(b.hi[i]); if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y); });
      for (let i = xs.length - 1; i >= 0; i--) ctx.lineTo(px(i), py(b.lo[i]));
      ctx.closePath(); ctx.fillStyle = b.color; ctx.fill();
    });
    // lines
    (spec.lines || []).forEach((l) => {
      ctx.beginPath(); ctx.strokeStyle = l.color; ctx.lineWidth = l.width || 1.5; ctx.lineJoin = "round";
      let started = false;
      l.y.forEach((v, i) => {
        if (!Number.isFinite(v)) return;
        if (!started) { ctx.moveTo(px(i), py(v)); started = true; } else ctx.lineTo(px(i), py(v));
      });
      ctx.stroke();
    });
    // last value marker on the first line
    const first = (spec.lines || [])[0];
    if (first) {
      const i = xs.length - 1, v = first.y[i];
      if (Number.isFinite(v)) {
        ctx.fillStyle = first.color; ctx.beginPath(); ctx.arc(px(i), py(v), 3, 0, Math.PI * 2); ctx.fill();
      }
    }
    return true;
  }

  window.SRChart = { draw: draw, timeLabel: timeLabel };
})();
