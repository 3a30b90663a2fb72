// The creator dashboard: the API's answers, drawn. No framework, no CDN;
// uPlot (vendored, MIT) draws the chart. The token lives in this tab's
// sessionStorage and travels only in the Authorization header.
"use strict";

const $ = (id) => document.getElementById(id);
const store = window.sessionStorage;
let granularity = "hour";
let selected = null;
let liveAbort = null;
let chart = null;
const fmt = new Intl.NumberFormat("en-US");

function token() { return store.getItem("vc_token"); }

async function api(path) {
  for (;;) {
    const r = await fetch(path, { headers: { Authorization: "Bearer " + token() } });
    if (r.status === 429) {
      const wait = Number(r.headers.get("Retry-After") || "1");
      await new Promise((ok) => setTimeout(ok, wait * 1000));
      continue;
    }
    const body = await r.json().catch(() => null);
    if (r.status === 401) { signOut("The token was refused: " + (body?.error?.message || r.status)); throw new Error("401"); }
    if (!r.ok) throw new Error(body?.error?.message || ("HTTP " + r.status));
    return body;
  }
}

function signOut(message) {
  store.removeItem("vc_token");
  store.removeItem("vc_creator");
  if (liveAbort) liveAbort.abort();
  $("app").hidden = true;
  $("signout").hidden = true;
  $("who").textContent = "";
  $("login").hidden = false;
  $("login-error").textContent = message || "";
}

async function start() {
  if (!token()) { signOut(); return; }
  let me;
  try { me = await api("/v1/me"); } catch (e) { return; }
  let creator = me.creator_id || store.getItem("vc_creator");
  if (!creator) {
    $("login").hidden = false;
    $("creator-row").hidden = false;
    $("token").value = token();
    $("login-error").textContent = "A " + me.role + " token: enter the creator to show.";
    return;
  }
  $("login").hidden = true;
  $("app").hidden = false;
  $("signout").hidden = false;
  $("who").textContent = me.name + " · " + me.role + " · creator " + creator;
  await loadList(creator);
}

async function loadList(creator) {
  const list = await api("/v1/creators/" + encodeURIComponent(creator) + "/views?limit=100");
  $("summary").textContent = "· " + fmt.format(list.views) + " views in " + list.videos + " videos";
  const tbody = $("videos");
  tbody.textContent = "";
  for (const row of list.rows) {
    const tr = document.createElement("tr");
    tr.className = "video";
    tr.dataset.video = row.video_id;
    const name = document.createElement("td");
    name.innerHTML = "<b></b><br><span class='muted'></span>";
    name.querySelector("b").textContent = row.video_id;
    name.querySelector("span").textContent = row.title;
    const views = document.createElement("td");
    views.className = "num";
    views.dataset.field = "views";
    views.dataset.value = row.views;
    views.textContent = fmt.format(row.views);
    const billable = document.createElement("td");
    billable.className = "num";
    billable.dataset.field = "billable_views";
    billable.dataset.value = row.billable_views;
    billable.textContent = fmt.format(row.billable_views);
    // Billable views the invalid-traffic rules removed (not paid), and why.
    const removed = document.createElement("td");
    removed.className = "num muted";
    removed.dataset.field = "fraud_filtered";
    removed.dataset.value = row.fraud_filtered;
    removed.textContent = row.fraud_filtered ? fmt.format(row.fraud_filtered) : "–";
    // Each reason code with its views, under the number (and in full on hover).
    const why = Object.entries(row.filtered_by_rule || {});
    if (why.length) {
      const reasons = why.map(([rule, n]) => rule.replaceAll("_", " ") + " " + fmt.format(n));
      removed.title = "removed as invalid traffic: " + reasons.join(", ");
      const small = document.createElement("div");
      small.className = "reasons";
      small.textContent = reasons.join(" · ");
      removed.append(small);
    }
    const badge = document.createElement("td");
    if (row.speed_views > 0) {
      badge.innerHTML = "<span class='badge' title='includes views from the speed layer, not yet final'>provisional</span>";
    }
    tr.append(name, views, billable, removed, badge);
    tr.addEventListener("click", () => select(row.video_id, row.title));
    tbody.append(tr);
  }
  $("list-note").textContent = list.warnings.join(" ") ||
    "Counts before " + (list.watermark || "—") + " are final (batch, invalid traffic removed); later ones are provisional (speed layer, not yet filtered for invalid traffic).";
  if (list.rows.length) select(selected || list.rows[0].video_id, list.rows[0].title);
}

function select(video, title) {
  selected = video;
  for (const tr of document.querySelectorAll("tr.video")) tr.classList.toggle("selected", tr.dataset.video === video);
  $("video-title").textContent = video + (title ? " · " + title : "");
  $("live-total").dataset.video = video;
  loadSeries();
  live(video);
}

// The batch/speed boundary: speed hours shaded, a line at the watermark.
function boundaryPlugin(watermark) {
  return {
    hooks: {
      drawClear: [(u) => {
        if (watermark == null) return;
        const x = u.valToPos(watermark, "x", true);
        const { top, height, left, width } = u.bbox;
        if (x > left + width) return;
        const from = Math.max(x, left);
        u.ctx.save();
        u.ctx.fillStyle = "rgba(224,123,0,0.08)";
        u.ctx.fillRect(from, top, left + width - from, height);
        u.ctx.restore();
      }],
      draw: [(u) => {
        if (watermark == null) return;
        const x = u.valToPos(watermark, "x", true);
        const { top, height, left, width } = u.bbox;
        if (x < left || x > left + width) return;
        u.ctx.save();
        u.ctx.strokeStyle = "#e07b00";
        u.ctx.setLineDash([5, 4]);
        u.ctx.lineWidth = 2;
        u.ctx.beginPath(); u.ctx.moveTo(x, top); u.ctx.lineTo(x, top + height); u.ctx.stroke();
        u.ctx.fillStyle = "#9a5400";
        u.ctx.font = "12px system-ui";
        u.ctx.fillText("watermark: batch ◀ | ▶ speed", Math.min(x + 6, left + width - 190), top + 14);
        u.ctx.restore();
      }],
    },
  };
}

async function loadSeries() {
  const video = selected;
  if (!video) return;
  const s = await api("/v1/videos/" + encodeURIComponent(video) + "/series?granularity=" + granularity);
  if (video !== selected) return;
  const xs = [], batch = [], speed = [];
  for (const p of s.points) {
    xs.push(Date.parse(p.start) / 1000);
    batch.push(p.source === "speed" ? null : p.views);
    speed.push(p.source === "batch" ? null : p.views);
  }
  // The last step ends at `to`: give it its width, so the speed hours
  // after the watermark show as a band rather than an edge.
  const step = granularity === "day" ? 86400 : 3600;
  if (xs.length) { xs.push(xs[xs.length - 1] + step); batch.push(null); speed.push(null); }
  // Join the two lines at the boundary.
  const i = s.points.findIndex((p) => p.source !== "batch");
  if (i > 0 && speed[i - 1] == null) speed[i - 1] = batch[i - 1];
  const watermark = s.watermark ? Date.parse(s.watermark) / 1000 : null;
  const el = $("chart");
  const width = Math.max(320, el.clientWidth || 600);
  if (chart) chart.destroy();
  chart = new uPlot({
    width, height: 300,
    plugins: [boundaryPlugin(watermark)],
    scales: { x: { time: true } },
    series: [
      {},
      { label: "batch", stroke: "#2f6fb3", width: 2, fill: "rgba(47,111,179,0.08)", points: { show: granularity === "day" } },
      { label: "speed", stroke: "#e07b00", width: 2, dash: [4, 3], points: { show: true } },
    ],
    axes: [{}, { label: "views per " + granularity }],
  }, [xs, batch, speed], el);
  $("chart-note").textContent = (s.warnings.join(" ") ||
    (s.provisional ? "Shaded: hours after the batch watermark, counted by the speed layer (provisional)." :
      "Every hour shown is final (batch)."));
}

// The merged total, live: Server-Sent Events read with fetch (EventSource
// cannot send an Authorization header).
async function live(video) {
  if (liveAbort) liveAbort.abort();
  const abort = new AbortController();
  liveAbort = abort;
  let lastSeries = Date.now();
  while (!abort.signal.aborted) {
    try {
      const r = await fetch("/v1/videos/" + encodeURIComponent(video) + "/live",
        { headers: { Authorization: "Bearer " + token() }, signal: abort.signal });
      if (!r.ok) throw new Error("HTTP " + r.status);
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const event = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
          if (!data) continue;
          const t = JSON.parse(data);
          const el = $("live-total");
          el.textContent = fmt.format(t.views);
          el.dataset.value = t.views;
          $("live-badge").innerHTML = t.provisional ? "<span class='badge'>provisional</span>" : "";
          $("freshness").textContent = t.speed_status === "unavailable"
            ? "The speed layer is unavailable: showing batch counts only."
            : (t.freshness_seconds != null ? "Fresh to within " + t.freshness_seconds.toFixed(1) + " s." : "");
          if (Date.now() - lastSeries > 5000) { lastSeries = Date.now(); loadSeries(); }
        }
      }
    } catch (e) {
      if (abort.signal.aborted) return;
    }
    await new Promise((ok) => setTimeout(ok, 2000));
  }
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  store.setItem("vc_token", $("token").value.trim());
  const c = $("creator").value.trim();
  if (c) store.setItem("vc_creator", c);
  $("login-error").textContent = "";
  start();
});
$("signout").addEventListener("click", () => signOut());
$("g-hour").addEventListener("click", () => { granularity = "hour"; $("g-hour").classList.add("on"); $("g-day").classList.remove("on"); loadSeries(); });
$("g-day").addEventListener("click", () => { granularity = "day"; $("g-day").classList.add("on"); $("g-hour").classList.remove("on"); loadSeries(); });
start();
