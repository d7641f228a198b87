// castfinder web page: videos with live progress, search by photo (refreshing while ingest runs),
// the discovered cast. Plain JS, no build step; every API error is shown in words.
"use strict";

const $ = (sel) => document.querySelector(sel);
let token = localStorage.getItem("castfinder-token") || "";
let videos = [];
let lastQuery = null;      // {form: FormData, video: id|null} re-asked while ingest runs
let refreshTimer = null;

function showError(message) {
  const box = $("#error");
  box.textContent = message;
  box.hidden = !message;
}
function say(message) { $("#status").textContent = message; }

function withToken(url) {
  return token ? url + (url.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(token) : url;
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers["Authorization"] = "Bearer " + token;
  let response;
  try {
    response = await fetch(path, Object.assign({}, options, { headers }));
  } catch (e) {
    throw new Error("The server cannot be reached (" + e.message + ").");
  }
  if (response.status === 401) {
    $("#token-box").hidden = false;
    throw new Error("This server needs an API token: enter it above.");
  }
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    let message = body && (body.error || body.detail) ? (body.error || body.detail) : response.statusText;
    if (Array.isArray(message)) message = message.map((d) => (d.loc || []).slice(-1)[0] + ": " + d.msg).join("; ");
    if (response.status === 413) message = "The photo is too large. " + message;
    throw new Error(message || ("Request failed with status " + response.status));
  }
  return body;
}

function hms(s) {
  if (s === null || s === undefined) return "–";
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = (s % 60).toFixed(1);
  return (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + sec.padStart(4, "0");
}

// --- videos --------------------------------------------------------------------------------------
async function loadVideos() {
  try {
    videos = await api("/videos");
  } catch (e) { showError(e.message); return; }
  const body = $("#videos tbody");
  body.replaceChildren(...videos.map((v) => {
    const tr = document.createElement("tr");
    tr.dataset.video = v.id;
    tr.dataset.status = v.status;
    const pct = v.progress === null ? "" : Math.round(v.progress * 100);
    tr.innerHTML = `<td>${v.id}</td><td></td><td>${v.status}</td>
      <td>${v.progress === null ? "live" : `<progress max="100" value="${pct}" aria-label="ingest progress of video ${v.id}">${pct}%</progress> ${pct}%`}</td>
      <td>${hms(v.indexed_until_s)}${v.duration_s ? " / " + hms(v.duration_s) : ""}</td>
      <td>${v.realtime_factor ? v.realtime_factor.toFixed(2) + "× real time" : "–"}</td>
      <td>${v.shots}</td><td>${v.faces}</td><td></td>`;
    tr.children[1].textContent = v.name;
    if (v.running) {
      const stop = document.createElement("button");
      stop.type = "button";
      stop.className = "secondary";
      stop.textContent = "Stop";
      stop.setAttribute("aria-label", "Stop ingesting video " + v.id);
      stop.onclick = async () => {
        try { await api("/videos/" + v.id, { method: "DELETE" }); say("Stopping video " + v.id + "…"); }
        catch (e) { showError(e.message); }
      };
      tr.children[8].append(stop);
    }
    return tr;
  }));
  const select = $("#video");
  const chosen = select.value;
  select.replaceChildren(new Option("all videos", ""), ...videos.map((v) => new Option(`${v.id}: ${v.name}`, v.id)));
  select.value = videos.some((v) => String(v.id) === chosen) ? chosen : (videos.length === 1 ? String(videos[0].id) : chosen);
}

$("#add-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  showError("");
  const source = $("#source").value.trim();
  try {
    const v = await api("/videos", { method: "POST", headers: { "Content-Type": "application/json" },
                                     body: JSON.stringify({ source }) });
    say(v.reused ? `Video ${v.id} is already indexed.` : `Ingesting video ${v.id}…`);
    $("#source").value = "";
    await loadVideos();
    $("#video").value = String(v.id);
  } catch (e) { showError(e.message); }
});

// --- search --------------------------------------------------------------------------------------
const drop = $("#drop");
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
drop.addEventListener("drop", (e) => { $("#photos").files = e.dataTransfer.files; listPhotos(); });
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("#photos").click(); } });
$("#photos").addEventListener("change", listPhotos);

function listPhotos() {
  $("#photo-list").replaceChildren(...[...$("#photos").files].map((f) => {
    const li = document.createElement("li");
    li.textContent = f.name;
    return li;
  }));
}

function buildQuery() {
  const form = new FormData();
  for (const f of $("#photos").files) form.append("photos", f, f.name);
  const character = $("#character").value.trim();
  if (character) form.append("character", character);
  const video = $("#video").value;
  if (video) form.append("video", video);
  form.append("fusion", $("#fusion").value);
  if ($("#features").value) form.append("features", $("#features").value);
  if ($("#expand").checked) form.append("expand", "true");
  form.append("limit", "60");
  return { form, video: video ? Number(video) : null };
}

async function runQuery(query, quiet) {
  const doc = await api("/query", { method: "POST", body: query.form });
  renderResults(doc, query.video);
  const v = videos.find((x) => x.id === query.video);
  const running = v && v.running;
  $("#progress-note").textContent = `${doc.results.length} shots` +
    (doc.indexed_until_s !== null ? ` · indexed until ${hms(doc.indexed_until_s)}` : "") +
    (v && v.duration_s ? ` of ${hms(v.duration_s)}` : "") + (running ? " · ingest running: results refresh as it grows" : "");
  if (!quiet) {
    const notes = doc.queries.filter((q) => q.note && q.note !== "face").map((q) => `${q.photo}: ${q.note}`);
    say(notes.length ? notes.slice(0, 3).join("; ") : "Search done.");
  }
  return running;
}

$("#search-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  showError("");
  if (!$("#photos").files.length && !$("#character").value.trim()) {
    showError("Choose at least one photo, or type the name of a named cast cluster.");
    return;
  }
  clearInterval(refreshTimer);
  lastQuery = buildQuery();
  say("Searching…");
  try {
    if (await runQuery(lastQuery, false)) {
      refreshTimer = setInterval(async () => {
        try { if (!(await runQuery(lastQuery, true))) clearInterval(refreshTimer); }
        catch (e) { clearInterval(refreshTimer); showError(e.message); }
      }, 3000);
    }
  } catch (e) {
    showError(e.message);
    say("");
  }
});

function renderResults(doc, videoId) {
  const list = $("#results");
  list.replaceChildren(...doc.results.map((r, i) => {
    const li = document.createElement("li");
    li.dataset.shot = r.shot;
    li.dataset.video = r.video;
    li.dataset.start = r.start_s;
    li.dataset.end = r.end_s;
    const b = document.createElement("button");
    b.type = "button";
    const label = `Shot ${r.shot} of video ${r.video}, ${hms(r.start_s)} to ${hms(r.end_s)}, score ${r.score.toFixed(3)}`;
    b.setAttribute("aria-label", "Play " + label);
    const img = document.createElement("img");
    img.src = withToken(r.thumbnail);
    img.alt = `Best matching frame of shot ${r.shot} at ${hms(r.best_frame_s)}`;
    img.loading = "lazy";
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = `#${i + 1} · shot ${r.shot} · ${hms(r.start_s)}–${hms(r.end_s)} · ${r.score.toFixed(3)}`;
    b.append(img, meta);
    b.onclick = () => play(r);
    li.append(b);
    return li;
  }));
  // timeline: the whole video (or what is indexed of a live one), matching shots marked
  const tl = $("#timeline");
  const v = videos.find((x) => x.id === (videoId ?? (doc.results[0] && doc.results[0].video)));
  const total = v ? (v.duration_s || v.indexed_until_s || 1) : Math.max(1, ...doc.results.map((r) => r.end_s));
  const indexed = document.createElement("div");
  indexed.className = "indexed";
  indexed.style.width = Math.min(100, 100 * (doc.indexed_until_s || 0) / total) + "%";
  const marks = doc.results.filter((r) => !v || r.video === v.id).map((r) => {
    const m = document.createElement("div");
    m.className = "mark";
    m.dataset.shot = r.shot;
    m.style.left = (100 * r.start_s / total) + "%";
    m.style.width = (100 * (r.end_s - r.start_s) / total) + "%";
    m.title = `shot ${r.shot}: ${hms(r.start_s)}–${hms(r.end_s)}`;
    return m;
  });
  tl.replaceChildren(indexed, ...marks);
  tl.setAttribute("aria-label", `timeline: ${marks.length} matching shots of ${hms(total)}`);
}

function play(r) {
  const v = videos.find((x) => x.id === r.video);
  if (!v || !v.media) {
    showError("This video is a live source: there is no file to play.");
    return;
  }
  const box = $("#player-box"), player = $("#player");
  box.hidden = false;
  const src = withToken(v.media);
  if (player.dataset.src !== src) { player.src = src; player.dataset.src = src; }
  $("#player-caption").textContent = `Shot ${r.shot}: ${hms(r.start_s)}–${hms(r.end_s)}`;
  const start = () => { player.currentTime = r.start_s; player.play().catch(() => {}); };
  if (player.readyState >= 1) start(); else player.addEventListener("loadedmetadata", start, { once: true });
  player.focus();
}

// --- cast ----------------------------------------------------------------------------------------
$("#cast-load").addEventListener("click", loadCast);

async function loadCast() {
  showError("");
  const video = $("#video").value;
  if (!video) { showError("Choose a video first: the cast belongs to one video."); return; }
  let doc;
  try { doc = await api(`/videos/${video}/cast`); } catch (e) { showError(e.message); return; }
  if (!doc.clusters.length) say(doc.message || "No characters found yet.");
  $("#cast").replaceChildren(...doc.clusters.map((c) => {
    const li = document.createElement("li");
    li.dataset.cluster = c.cluster;
    const img = document.createElement("img");
    img.src = withToken(c.sheet);
    img.alt = `Best faces of cluster ${c.cluster}` + (c.name ? ` (${c.name})` : "");
    const info = document.createElement("p");
    info.textContent = `Cluster ${c.cluster}: ${c.shots.length} shots, ${c.screen_time_s.toFixed(1)} s on screen, first seen ${hms(c.first_s)}`;
    const id = "name-" + c.cluster;
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = "Name";
    const input = document.createElement("input");
    input.id = id;
    input.value = c.name || "";
    const save = document.createElement("button");
    save.type = "button";
    save.textContent = "Save name";
    save.onclick = async () => {
      showError("");
      try {
        await api(`/videos/${video}/cast/${c.cluster}`, { method: "PUT", headers: { "Content-Type": "application/json" },
                                                        body: JSON.stringify({ name: input.value }) });
        say(`Cluster ${c.cluster} is now “${input.value.trim()}”: type that name as the character to search without photos.`);
      } catch (e) { showError(e.message); }
    };
    li.append(img, info, label, input, save);
    return li;
  }));
}

// --- start ---------------------------------------------------------------------------------------
$("#token").value = token;
$("#token-save").addEventListener("click", () => {
  token = $("#token").value.trim();
  localStorage.setItem("castfinder-token", token);
  $("#token-box").hidden = true;
  showError("");
  loadVideos();
});
loadVideos();
setInterval(loadVideos, 2000);
