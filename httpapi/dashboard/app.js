// tally dashboard: polls this node's /v1/dashboard once a second and draws
// it. No framework and no build step; every value goes in through
// textContent, never as HTML.
"use strict";

const POLL_MS = 1000;
const SPARK_POINTS = 120;

const $ = (id) => document.getElementById(id);
const fmt = (n) => (n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US"));
const fmtRate = (r) => (r >= 100 ? Math.round(r).toLocaleString("en-US") : r.toFixed(1));
const fmtLag = (s) => (s < 0 ? "never synced" : s < 10 ? s.toFixed(2) + " s" : Math.round(s) + " s");

let video = new URLSearchParams(location.search).get("video") || "";
let userChose = video !== "";
const lastKnown = new Map(); // video -> Map(region -> count) of the last answers
const rates = [];
let timer = null;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function setVideo(v, chosen) {
  video = v;
  userChose = userChose || chosen;
  $("video").value = v;
  const u = new URL(location.href);
  if (v) u.searchParams.set("video", v); else u.searchParams.delete("video");
  history.replaceState(null, "", u);
  $("add-result").textContent = "";
  poll();
}

async function poll() {
  clearTimeout(timer);
  const asked = video;
  try {
    const q = asked ? "?video=" + encodeURIComponent(asked) : "";
    const resp = await fetch("/v1/dashboard" + q, { cache: "no-store" });
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    const data = await resp.json();
    $("conn").hidden = true;
    if (asked === video) render(data);
  } catch (err) {
    $("conn").hidden = false;
  }
  timer = setTimeout(poll, POLL_MS);
}

function render(d) {
  const n = d.node;
  $("node-region").textContent = n.region;
  $("node-name").textContent = n.name || "(single node)";
  $("node-replica").textContent = n.replica;
  const ready = $("node-ready");
  ready.textContent = n.ready ? "ready" : "not ready: " + n.readyReason;
  ready.title = n.readyReason;
  ready.className = "badge " + (n.ready ? "ok" : "warn");

  if (!d.video && !userChose && d.top.length > 0) {
    setVideo(d.top[0].videoId, false); // show something at once
    return;
  }
  renderRegions(d);
  renderMembers(d);
  renderTop(d);
  renderIngest(d.ingest);
  $("updated").textContent = new Date().toLocaleTimeString();
}

function renderRegions(d) {
  $("video-title").textContent = d.video || "—";
  const box = $("regions");
  box.replaceChildren();
  const agreement = $("agreement");
  if (!d.video) {
    agreement.textContent = "choose a video";
    agreement.className = "badge";
    return;
  }
  let known = lastKnown.get(d.video);
  if (!known) lastKnown.set(d.video, (known = new Map()));
  let max = 0;
  for (const r of d.regions) {
    if (r.viewCount !== null) max = Math.max(max, r.viewCount);
  }
  for (const r of d.regions) {
    const card = el("div", "region" + (r.local ? " local" : ""));
    card.dataset.region = r.region;
    card.appendChild(el("div", "name", r.region + (r.local ? " (this region)" : "")));
    let count = r.viewCount;
    let detail;
    if (count !== null) {
      known.set(r.region, count);
      detail = r.reachable + "/" + r.members + " nodes answered · lag " + (r.local ? "0 s" : fmtLag(r.lagSeconds));
      card.dataset.state = "live";
      if (count < max) card.classList.add("behind");
    } else if (known.has(r.region)) {
      count = known.get(r.region);
      card.classList.add("stale");
      card.dataset.state = "stale";
      detail = "unreachable · last answer shown";
    } else {
      card.dataset.state = "unknown";
      detail = "unreachable";
    }
    card.appendChild(el("div", "count", fmt(count)));
    card.appendChild(el("div", "detail", detail));
    box.appendChild(card);
  }
  if (d.converged) {
    agreement.textContent = "converged";
    agreement.className = "badge ok";
  } else {
    agreement.textContent = "diverged";
    agreement.className = "badge bad";
  }
  agreement.dataset.state = agreement.textContent;
}

function renderMembers(d) {
  const body = $("members");
  body.replaceChildren();
  for (const m of d.members) {
    const tr = el("tr", m.self ? "self" : "");
    tr.dataset.member = m.name;
    tr.dataset.status = m.status;
    tr.appendChild(el("td", "mono", m.name || "(this node)"));
    tr.appendChild(el("td", "", m.region));
    const st = el("td");
    st.appendChild(el("span", "badge status-" + m.status, m.status));
    tr.appendChild(st);
    tr.appendChild(el("td", "", m.self ? "—" : m.status === "down" ? "—" : fmtLag(m.lagSeconds)));
    tr.appendChild(el("td", "", m.self || m.status === "down" ? "—" : fmt(m.behind)));
    tr.appendChild(el("td", "count", d.video ? fmt(m.viewCount) : "—"));
    const note = el("td", "note", m.error || (m.lastSeen ? "last seen " + m.lastSeen : m.httpAddr || ""));
    note.title = note.textContent;
    tr.appendChild(note);
    body.appendChild(tr);
  }
}

function renderTop(d) {
  const list = $("top");
  list.replaceChildren();
  $("top-empty").hidden = d.top.length > 0;
  for (const t of d.top) {
    const li = el("li");
    li.dataset.video = t.videoId;
    const b = el("button", "", t.videoId);
    b.type = "button";
    b.addEventListener("click", () => setVideo(t.videoId, true));
    li.appendChild(b);
    li.appendChild(el("span", "muted", " " + fmt(t.viewCount) + " views"));
    list.appendChild(li);
  }
}

function renderIngest(g) {
  $("rate-events").textContent = fmtRate(g.eventsPerSecond);
  $("rate-counted").textContent = fmtRate(g.countedPerSecond);
  $("total-counted").textContent = fmt(g.counted);
  $("total-duplicate").textContent = fmt(g.duplicate);
  $("total-limited").textContent = fmt(g.rateLimited);
  rates.push(g.eventsPerSecond);
  if (rates.length > SPARK_POINTS) rates.shift();
  const top = Math.max(1, ...rates);
  const step = 300 / (SPARK_POINTS - 1);
  const off = SPARK_POINTS - rates.length;
  $("spark-line").setAttribute("points",
    rates.map((r, i) => ((off + i) * step).toFixed(1) + "," + (58 - (r / top) * 56).toFixed(1)).join(" "));
}

async function addView() {
  const v = $("video").value.trim();
  if (!v) {
    $("add-result").textContent = "type a video ID first";
    return;
  }
  if (v !== video) setVideo(v, true);
  const user = "dashboard-" + Math.random().toString(36).slice(2, 12);
  try {
    const resp = await fetch("/videos/" + encodeURIComponent(v) + "/views", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ userId: user }),
    });
    const body = await resp.json();
    $("add-result").textContent = resp.ok
      ? (body.counted ? "counted: " : "not counted (" + body.reason + "): ") + fmt(body.viewCount) + " views here"
      : "refused: " + (body.error ? body.error.message : "HTTP " + resp.status);
  } catch (err) {
    $("add-result").textContent = "failed: " + err.message;
  }
  poll();
}

document.addEventListener("DOMContentLoaded", () => {
  $("video").value = video;
  $("video-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    setVideo($("video").value.trim(), true);
  });
  $("add-view").addEventListener("click", addView);
  poll();
});
