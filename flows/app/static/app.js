// mmcaps search page: one query box over /api/search, result tiles that play their clip, and the capsules view.
"use strict";

const $ = (sel) => document.querySelector(sel);
let playing = null; // {start, end} of the clip in the player

function fmt(seconds) {
  const m = Math.floor(seconds / 60);
  const s = seconds - 60 * m;
  return `${m}:${s.toFixed(1).padStart(4, "0")}`;
}

function esc(text) {
  const div = document.createElement("div");
  div.textContent = text == null ? "" : String(text);
  return div.innerHTML;
}

// value: the score of a search hit, or a capsule's activation shown as standard deviations above its mean (the
// secondary activations are a softmax over capsules, so their raw values differ only in late decimals)
function tile(hit, value, valueLabel, capsule) {
  const el = document.createElement("button");
  el.type = "button";
  el.className = "tile";
  el.dataset.clip = hit.clip;
  el.dataset.start = hit.start;
  el.dataset.end = hit.end;
  if (hit.media) el.dataset.media = hit.media;
  const img = hit.thumb
    ? `<img loading="lazy" alt="" src="${hit.thumb}" onerror="this.replaceWith(Object.assign(document.createElement('div'),{className:'nothumb'}))">`
    : `<div class="nothumb"></div>`;
  el.innerHTML =
    `${img}<div class="meta"><span class="vid" title="${esc(hit.video_id)}">${esc(hit.video_id)}</span>` +
    (capsule
      ? `<span class="score" title="activation ${value.toPrecision(6)}">` +
        `${((value - capsule.mean) / (capsule.spread || 1)).toFixed(1)}σ</span></div>`
      : `<span class="score" title="${valueLabel}">${value.toFixed(3)}</span></div>`) +
    `<div class="span">${fmt(hit.start)}–${fmt(hit.end)} · ${esc(hit.kind)}${hit.rank ? " · #" + hit.rank : ""}</div>` +
    `<div class="text" title="${esc(hit.text)}">${esc(hit.text) || "<i>no narration</i>"}</div>`;
  el.addEventListener("click", () => play(el, hit));
  return el;
}

function play(el, hit) {
  if (!hit.media) {
    $("#status").textContent = `the video of ${hit.video_id} is not served (not a local file of the dataset)`;
    return;
  }
  document.querySelectorAll(".tile.playing").forEach((t) => t.classList.remove("playing"));
  el.classList.add("playing");
  const video = $("#video");
  const player = $("#player");
  if (!$("#view-search").hidden) player.hidden = false;
  else showPlayerIn(el);
  playing = { start: hit.start, end: hit.end };
  $("#now-playing").textContent = `${hit.video_id}  ${fmt(hit.start)}–${fmt(hit.end)}`;
  const start = () => {
    video.currentTime = hit.start;
    video.play().catch(() => {});
  };
  if (video.getAttribute("src") === hit.media && video.readyState >= 1) {
    start();
  } else {
    video.addEventListener("loadedmetadata", start, { once: true });
    video.src = hit.media;
    video.load();
  }
}

function showPlayerIn(el) {
  // the capsules view has no player of its own: move the one player above the capsule's row
  const player = $("#player");
  el.closest(".capsule").before(player);
  player.hidden = false;
}

$("#video").addEventListener("timeupdate", () => {
  const video = $("#video");
  if (playing && $("#stop-at-end").checked && video.currentTime >= playing.end) {
    video.pause();
    playing = null;
  }
});

$("#close-player").addEventListener("click", () => {
  $("#video").pause();
  $("#player").hidden = true;
});

// One readable line from an API error: FastAPI's {detail: "text"} (our HTTPException) or pydantic's 422
// {detail: [{loc: ["query", "k"], msg, input}, ...]} (a parameter out of its range), else the HTTP status.
function apiError(response, body) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail) && detail.length) {
    return detail.map((d) => {
      const where = (d.loc || []).filter((part) => part !== "query" && part !== "body").join(".");
      const got = d.input === undefined ? "" : ` (got ${JSON.stringify(d.input)})`;
      return `${where ? where + ": " : ""}${d.msg || JSON.stringify(d)}${got}`;
    }).join("; ");
  }
  return `HTTP ${response.status} ${response.statusText}`.trim();
}

// Select `value` in a menu, adding it as an option when the menu lacks it (a deep link's k=8): a <select> given a
// value it has no option for shows nothing and sends "". Numeric menus (k) keep their options in order.
function choose(select, value) {
  let option = [...select.options].find((o) => o.value === value);
  if (!option) {
    option = new Option(value, value);
    const after = [...select.options].find((o) => Number(o.value) > Number(value));
    select.add(option, after || null);
  }
  select.value = value;
}

async function search(event) {
  if (event) event.preventDefault();
  const q = $("#query").value.trim();
  if (!q) return;
  const params = new URLSearchParams({ q, k: $("#k").value, modality: $("#modality").value, method: $("#method").value });
  $("#status").textContent = "searching…";
  const response = await fetch(`/api/search?${params}`);
  const body = await response.json().catch(() => null);
  if (!response.ok || body === null) {
    $("#status").textContent = `error: ${apiError(response, body)}`;
    return;
  }
  const results = $("#results");
  results.replaceChildren(...body.hits.map((h) => tile(h, h.score, "score", null)));
  const unknown = body.unknown_words.length
    ? ` <span class="warn">· not in the vocabulary: ${esc(body.unknown_words.join(", "))}</span>` : "";
  const none = body.in_vocab_words === 0 ? ` <span class="warn">· no known word: scores are meaningless</span>` : "";
  $("#status").innerHTML =
    `${body.hits.length} clips for <b>${esc(body.query)}</b> · ${esc(body.modality)} · ${esc(body.method)} · ` +
    `${(1000 * body.seconds).toFixed(1)} ms${unknown}${none}`;
  history.replaceState(null, "", `?${params}`);
}

async function loadCapsules() {
  const box = $("#capsules");
  if (box.dataset.loaded) return;
  const body = await (await fetch("/api/capsules?n=16&top=6")).json();
  box.dataset.loaded = "1";
  if (!body.capsules.length) {
    box.textContent = "this model has no capsules (a baseline architecture): nothing to show";
    return;
  }
  for (const cap of body.capsules) {
    const row = document.createElement("div");
    row.className = "capsule";
    row.dataset.capsule = cap.capsule;
    row.innerHTML =
      `<h3>capsule ${cap.capsule}<span>spread ${cap.spread.toExponential(2)} · mean ${cap.mean.toFixed(4)}</span></h3>`;
    const grid = document.createElement("div");
    grid.className = "grid";
    grid.replaceChildren(...cap.clips.map((c) => tile(c, c.activation, "activation", cap)));
    row.append(grid);
    box.append(row);
  }
}

function show(view) {
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.view === view));
  $("#view-search").hidden = view !== "search";
  $("#view-capsules").hidden = view !== "capsules";
  $("#player").hidden = true;
  $("#video").pause();
  if (view === "search") $("#view-search").insertBefore($("#player"), $("#results"));
  if (view === "capsules") loadCapsules();
}

async function init() {
  const info = await (await fetch("/api/info")).json();
  const w = info.windowing;
  const approx = Object.entries(info.approximate)
    .map(([m, s]) => `${m}: IVF nprobe ${s.nprobe}/${s.nlist}, recall@10 ${s.recall.toFixed(3)}`).join("; ");
  $("#served").innerHTML =
    `run <b>${esc(info.run_id)}</b> (${esc(info.checkpoint)}, step ${info.steps}, sha256 <code>${esc(info.checkpoint_sha256.slice(0, 12))}</code>)` +
    ` · index <b>${esc(info.dataset)}</b>: ${info.clips} clips of ${info.videos} videos, windows ${w.window} s / ${w.stride} s` +
    `${w.captions ? " + captions" : ""}, D=${info.dim}, fingerprint <code>${esc(info.fingerprint)}</code>, built ${esc(info.created)}` +
    ` · ${approx ? "approximate " + esc(approx) : "exact search"}` +
    (info.notes.length ? ` · <span class="warn">${esc(info.notes.join("; "))}</span>` : "");
  $("#k").title = `results: the menu's, or any k from 1 to ${info.max_k} in the link (?k=)`;
  const select = $("#modality");
  select.replaceChildren(...info.modalities.map((m) => new Option(m, m, m === info.default_modality, m === info.default_modality)));
  document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => show(t.dataset.view)));
  $("#query-form").addEventListener("submit", search);
  const params = new URLSearchParams(location.search);
  if (params.get("q")) {
    $("#query").value = params.get("q");
    for (const key of ["k", "modality", "method"]) if (params.get(key)) choose($(`#${key}`), params.get(key));
    search();
  }
  document.body.dataset.ready = "1";
}

init();
