/* streamrisk dashboard: applies server-sent deltas to a local model and renders it.
   Every value from the stream is written with textContent, never as HTML. */
(function () {
  "use strict";
  const MAX_ALERTS = 200, MAX_POINTS = 600, MAX_DENIALS = 100;
  const model = {
    seq: 0, lastTs: 0, alerts: [], scopes: new Map(), instruments: new Map(), series: new Map(),
    accounts: new Map(), denials: [], totals: { events: {}, decisions: {}, alerts: {} },
    selected: null, fresh: new Set(), updates: [],
  };
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  };
  const pad = (n, w) => String(n).padStart(w || 2, "0");
  function fmtTime(ms, withDate) {
    if (!ms) return "--";
    const d = new Date(ms);
    const t = pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds()) + "." + pad(d.getUTCMilliseconds(), 3);
    return withDate ? d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " + t : t;
  }
  function fmtNum(v, digits) {
    if (v === null || v === undefined || !Number.isFinite(v)) return "--";
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(2) + "B";
    if (a >= 1e6) return (v / 1e6).toFixed(2) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
    return v.toFixed(digits === undefined ? 2 : digits);
  }
  // Money: whole units with separators, compact (k, M, B) from 100,000 on.
  function fmtMoney(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return "--";
    if (Math.abs(v) >= 1e5) return fmtNum(v);
    return Math.round(v).toLocaleString("en-US");
  }
  const fmtPct = (v, d) => (v === null || v === undefined || !Number.isFinite(v)) ? "--" : (v * 100).toFixed(d === undefined ? 2 : d) + "%";
  const fmtPrice = (v) => (!Number.isFinite(v) ? "--" : v >= 1000 ? v.toFixed(1) : v >= 10 ? v.toFixed(2) : v.toFixed(4));
  const signClass = (v) => (v > 0 ? "pos" : v < 0 ? "neg" : "");

  // --- applying deltas ---------------------------------------------------------------
  function apply(d) {
    if (d.reset) {
      model.alerts = []; model.scopes.clear(); model.instruments.clear(); model.series.clear();
      model.accounts.clear(); model.denials = [];
    }
    model.seq = d.seq; model.lastTs = Math.max(model.lastTs, d.last_ts || 0); model.totals = d.totals;
    const fresh = !d.reset;
    d.alerts.forEach((a) => { model.alerts.push(a); if (fresh) model.fresh.add(a.id); });
    model.alerts.sort((a, b) => b.ts - a.ts || b.seq - a.seq);
    if (model.alerts.length > MAX_ALERTS) model.alerts.length = MAX_ALERTS;
    d.scopes.forEach((s) => model.scopes.set(s.scope, s));
    d.instruments.forEach((i) => model.instruments.set(i.symbol, i));
    Object.keys(d.series).forEach((sym) => {
      const pts = model.series.get(sym) || [];
      d.series[sym].forEach((p) => pts.push(p));
      if (pts.length > MAX_POINTS) pts.splice(0, pts.length - MAX_POINTS);
      model.series.set(sym, pts);
    });
    d.accounts.forEach((a) => model.accounts.set(a.account, a));
    d.denials.forEach((x) => model.denials.unshift(x));
    if (model.denials.length > MAX_DENIALS) model.denials.length = MAX_DENIALS;
    const now = performance.now();
    const count = d.alerts.length + d.scopes.length + d.instruments.length + d.accounts.length + d.denials.length;
    if (!d.reset) model.updates.push([now, count]);
    if (!model.selected || !model.instruments.has(model.selected)) {
      model.selected = [...model.instruments.keys()].sort()[0] || null;
    }
    schedule();
  }

  // --- rendering ---------------------------------------------------------------------
  let pending = false;
  function schedule() { if (!pending) { pending = true; requestAnimationFrame(render); } }
  function render() {
    pending = false;
    $("event-time").textContent = fmtTime(model.lastTs, true);
    renderKpis(); renderAlerts(); renderStates(); renderInstruments(); renderAccounts();
    renderDenials(); renderSymbolSelect(); renderCharts();
  }
  function setKpi(id, value, cls) { const e = $(id); e.textContent = value; e.className = "kpi-value" + (cls ? " " + cls : ""); }
  function renderKpis() {
    const t = model.totals, al = t.alerts || {}, dec = t.decisions || {};
    const alerts = (al.critical || 0) + (al.warning || 0) + (al.info || 0);
    setKpi("kpi-alerts", fmtNum(alerts, 0), al.critical ? "alarm" : "");
    $("kpi-alerts-sub").textContent = (al.critical || 0) + " critical · " + (al.warning || 0) + " warning";
    const decisions = (dec.accept || 0) + (dec.deny || 0);
    setKpi("kpi-decisions", fmtNum(decisions, 0));
    $("kpi-decisions-sub").textContent = "deny rate " + (decisions ? fmtPct((dec.deny || 0) / decisions, 1) : "--");
    let halted = 0, reducing = 0;
    model.scopes.forEach((s) => { if (s.to === "halted") halted++; else if (s.to === "reducing") reducing++; });
    setKpi("kpi-scopes", String(halted + reducing), halted ? "alarm" : "");
    $("kpi-scopes-sub").textContent = halted + " halted · " + reducing + " reducing";
    let stressed = 0; model.instruments.forEach((i) => { if (i.regime === "stressed") stressed++; });
    setKpi("kpi-instruments", String(model.instruments.size));
    $("kpi-instruments-sub").textContent = stressed + " stressed";
    let pnl = 0; model.accounts.forEach((a) => { pnl += a.day_pnl || 0; });
    setKpi("kpi-pnl", model.accounts.size ? fmtMoney(pnl) : "--", model.accounts.size ? signClass(pnl) : "");
    $("kpi-pnl-sub").textContent = model.accounts.size + " accounts";
    const now = performance.now();
    model.updates = model.updates.filter((u) => now - u[0] < 5000);
    const rate = model.updates.reduce((s, u) => s + u[1], 0) / 5;
    setKpi("kpi-rate", fmtNum(rate, rate < 10 ? 1 : 0));
    const events = Object.values(t.events || {}).reduce((s, v) => s + v, 0);
    $("kpi-rate-sub").textContent = fmtNum(events, 0) + " events seen";
  }
  function renderAlerts() {
    const list = $("alerts");
    list.replaceChildren(...model.alerts.map((a) => {
      const li = el("li", "alert " + a.severity + (model.fresh.has(a.id) ? " fresh" : ""));
      li.dataset.id = a.id;
      const top = el("div", "alert-top");
      top.append(el("span", "sev " + a.severity, a.severity), el("span", "alert-code", a.code),
        el("span", "alert-entity", a.entity), el("span", "alert-time", fmtTime(a.ts)));
      const nums = "observed " + fmtNum(a.observed, 4) + " · threshold " + fmtNum(a.threshold, 4) +
        (a.features && a.features.length ? " · " + a.features.join(", ") : "");
      li.append(top, el("div", "alert-msg", a.message), el("div", "alert-nums", nums));
      return li;
    }));
    model.fresh.clear();
    $("alerts-count").textContent = String(model.alerts.length);
    $("alerts-empty").hidden = model.alerts.length > 0;
  }
  function rows(tableId, items, build) {
    const body = $(tableId).querySelector("tbody");
    body.replaceChildren(...items.map(build));
    $(tableId + "-empty").hidden = items.length > 0;
  }
  function td(text, cls) { return el("td", cls, text); }
  function stateBadge(state) { const t = el("td"); t.append(el("span", "state " + state, state)); return t; }
  function renderStates() {
    const order = { halted: 0, reducing: 1, active: 2 };
    const items = [...model.scopes.values()].sort((a, b) => order[a.to] - order[b.to] || b.ts - a.ts);
    const restricted = items.filter((s) => s.to !== "active");
    $("states-count").textContent = String(restricted.length);
    rows("states", items, (s) => {
      const tr = el("tr");
      const cause = s.cause + (s.actor ? " (by " + s.actor + ")" : "");
      tr.append(td(s.scope), stateBadge(s.to), td(cause, "wrap"), td(fmtTime(s.ts)));
      return tr;
    });
  }
  function renderInstruments() {
    const items = [...model.instruments.values()].sort((a, b) => a.symbol.localeCompare(b.symbol));
    rows("instruments", items, (i) => {
      const tr = el("tr", "clickable" + (i.symbol === model.selected ? " selected" : ""));
      const anomaly = el("td", "num");
      const bar = el("span", "bar"); bar.style.width = Math.round(Math.min(1, i.anomaly || 0) * 40) + "px";
      anomaly.append(bar, document.createTextNode((i.anomaly || 0).toFixed(2)));
      tr.append(td(i.symbol), td(fmtPrice(i.price), "num"), td(fmtPct(i.vol, 3), "num"),
        td(fmtPct(i.var_95), "num"), td(fmtPct(i.var_99), "num"), td(fmtPct(i.es_975), "num"),
        anomaly, td(i.regime, "regime " + i.regime));
      tr.addEventListener("click", () => { model.selected = i.symbol; schedule(); });
      return tr;
    });
  }
  function renderAccounts() {
    const items = [...model.accounts.values()].sort((a, b) => a.account.localeCompare(b.account));
    rows("accounts", items, (a) => {
      const tr = el("tr");
      tr.append(td(a.account), stateBadge(a.state), td(fmtMoney(a.day_pnl), "num " + signClass(a.day_pnl)),
        td(fmtMoney(a.realized_pnl), "num " + signClass(a.realized_pnl)),
        td(fmtMoney(a.unrealized_pnl), "num " + signClass(a.unrealized_pnl)),
        td(fmtMoney(a.gross), "num"), td(fmtMoney(a.net), "num " + signClass(a.net)),
        td(fmtNum(a.leverage) + "x", "num"), td(fmtMoney(a.var_95), "num"),
        td(fmtPct(a.drawdown), "num"), td(fmtMoney(a.open_orders), "num"));
      return tr;
    });
  }
  function renderDenials() {
    const list = $("denials");
    list.replaceChildren(...model.denials.map((x) => {
      const li = el("li", "denial");
      li.append(el("span", "alert-entity", x.account), el("span", null, x.symbol),
        el("span", "codes", x.codes.join(", ") || "DENY"), el("span", "t", fmtTime(x.ts)));
      return li;
    }));
    $("denials-count").textContent = String(model.denials.length);
    $("denials-empty").hidden = model.denials.length > 0;
  }
  function renderSymbolSelect() {
    const select = $("symbol");
    const symbols = [...model.instruments.keys()].sort();
    const current = [...select.options].map((o) => o.value);
    if (symbols.join("|") !== current.join("|")) {
      select.replaceChildren(...symbols.map((s) => { const o = el("option", null, s); o.value = s; return o; }));
    }
    if (model.selected) select.value = model.selected;
  }
  function renderCharts() {
    const pts = (model.selected && model.series.get(model.selected)) || [];
    // point: [ts_ms, price, var_95, var_99, vol, anomaly]
    const x = pts.map((p) => p[0]), price = pts.map((p) => p[1]);
    SRChart.draw($("price-chart"), {
      x: x, empty: model.selected ? "waiting for more points of " + model.selected : "waiting for instrument risk",
      yFormat: fmtPrice,
      bands: [
        { lo: pts.map((p) => p[1] * (1 - p[3])), hi: pts.map((p) => p[1] * (1 + p[3])), color: "rgba(240,80,110,0.16)" },
        { lo: pts.map((p) => p[1] * (1 - p[2])), hi: pts.map((p) => p[1] * (1 + p[2])), color: "rgba(242,180,65,0.30)" },
      ],
      lines: [{ y: price, color: "#4ea1ff", width: 1.8 }],
    });
    SRChart.draw($("vol-chart"), {
      x: x, empty: "", floorZero: true, yFormat: (v) => (v * 100).toFixed(2) + "%",
      bars: [{ y: pts.map((p) => p[5]), color: "rgba(78,161,255,0.28)", max: 1 }],
      lines: [{ y: pts.map((p) => p[4]), color: "#a78bfa", width: 1.5 }, { y: pts.map((p) => p[3]), color: "#f0506e", width: 1.2 }],
    });
    const i = model.selected && model.instruments.get(model.selected);
    const facts = $("facts");
    if (!i) { facts.replaceChildren(); return; }
    const fact = (k, v) => { const d = el("div"); d.append(el("dt", null, k), el("dd", null, v)); return d; };
    facts.replaceChildren(fact("price", fmtPrice(i.price)), fact("VaR 95 / 99", fmtPct(i.var_95) + " / " + fmtPct(i.var_99)),
      fact("ES 97.5", fmtPct(i.es_975)), fact("vol / step", fmtPct(i.vol, 3)),
      fact("method · regime", i.method + " · " + i.regime), fact("status", i.status + (i.stale ? " (stale)" : "")));
  }

  // --- connection ----------------------------------------------------------------------
  function setConn(kind, text) { $("conn").className = "conn conn-" + kind; $("conn-text").textContent = text; }
  function connect() {
    const source = new EventSource("/events");
    source.addEventListener("open", () => setConn("live", "live"));
    source.addEventListener("update", (e) => { setConn("live", "live"); apply(JSON.parse(e.data)); });
    source.addEventListener("error", () => setConn("down", "reconnecting"));
  }
  $("symbol").addEventListener("change", (e) => { model.selected = e.target.value; schedule(); });
  window.addEventListener("resize", schedule);
  setInterval(schedule, 1000);  // keeps the updates/s figure current when nothing arrives
  window.streamrisk = { model: model };  // for tests and the curious: read-only use
  connect();
})();
