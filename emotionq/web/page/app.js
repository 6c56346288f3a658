// The emotionq page: upload a recording to POST /v1/jobs, follow GET /v1/jobs/{id}/events (long-polling
// GET /v1/jobs/{id} where the stream fails), draw the result.
"use strict";

const LABELS = ["angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised", "unknown"];
const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
const STEPS = ["uploading", "queued", "running", "finished"];
const KEY_STORAGE = "emotionq.apiKey";
const POLL_WAIT_S = 2;      // Prefer: wait=N per poll: a finished job answers at once, a status change within N s
const MIN_POLL_MS = 1000;   // never poll faster, even if the server honours no wait
const RETRY_MS = 5000;      // after a network error or a 429/503 without Retry-After

const $ = (id) => document.getElementById(id);
const api = (path) => new URL(`../v1/${path}`, document.baseURI);  // the API serves this page under /ui/
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const colour = (label) => `var(--c-${label})`;
let generation = 0;         // bumped per upload, so an older job's poller stops

class Problem extends Error {
  constructor(status, body, retryAfter) {
    const p = body && typeof body === "object" ? body : {};
    super(p.detail || `the API answered HTTP ${status}`);
    this.status = status;
    this.code = p.code || `http_${status}`;
    this.retryAfter = Number(retryAfter) || 0;
  }
}

function authHeaders() {
  const key = $("key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  node.textContent = text;
  return node;
}

const percent = (x) => `${(x * 100).toFixed(1)}%`;

function clock(seconds) {
  const s = Math.round(seconds);
  const hms = [Math.floor(s / 3600), Math.floor(s / 60) % 60, s % 60];
  const pad = (n) => String(n).padStart(2, "0");
  return hms[0] ? `${hms[0]}:${pad(hms[1])}:${pad(hms[2])}` : `${hms[1]}:${pad(hms[2])}`;
}

// -- talking to the API --------------------------------------------------------------------------------

function upload(file, priority, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", api("jobs"));
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onload = () => {
      if (xhr.status === 200 || xhr.status === 202) resolve(xhr.response);
      else reject(new Problem(xhr.status, xhr.response, xhr.getResponseHeader("Retry-After")));
    };
    xhr.onerror = () => reject(new Problem(0, { code: "network_error",
      detail: "the upload did not reach the API (connection refused or dropped; a file over the size limit may be cut off)" }));
    const form = new FormData();
    form.append("priority", priority);
    form.append("segmentation", $("segmentation").value);
    form.append("channels", $("channels").value);
    const names = $("channel-names").value.trim();
    if (names && $("channels").value === "separate") form.append("channel_names", names);
    if ($("transcript").value) {  // SenseVoice: text, language and events per segment
      form.append("transcript", "true");
      form.append("language", $("transcript").value);
    }
    if ($("speakers").value !== "off") form.append("speakers", $("speakers").value);
    form.append("file", file);
    xhr.send(form);
  });
}

async function fetchJob(id) {
  const r = await fetch(api(`jobs/${encodeURIComponent(id)}`),
                        { headers: { ...authHeaders(), Prefer: `wait=${POLL_WAIT_S}` }, cache: "no-store" });
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new Problem(r.status, body, r.headers.get("Retry-After"));
  return body;
}

function sseBlock(block) {
  // One Server-Sent Event ("event: x\nid: n\ndata: {...}") as {event, data}; comments (": ping") are skipped.
  const fields = {};
  for (const line of block.split(/\r?\n/)) {
    if (!line || line.startsWith(":")) continue;
    const at = line.indexOf(":");
    fields[line.slice(0, at)] = line.slice(at + 1).replace(/^ /, "");
  }
  return fields.data ? { event: fields.event || "message", data: JSON.parse(fields.data) } : null;
}

async function follow(job, gen) {
  // The job's event stream (fetch, since EventSource cannot send the API key), until its terminal event.
  const r = await fetch(api(`jobs/${encodeURIComponent(job.id)}/events`), { headers: authHeaders(), cache: "no-store" });
  if (!r.ok || !r.body) throw new Problem(r.status, await r.json().catch(() => null), r.headers.get("Retry-After"));
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    while (gen === generation && !TERMINAL.has(job.status)) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0 && gen === generation) {
        const sse = sseBlock(buffer.slice(0, cut));
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
        if (!sse) continue;
        job = sse.event === "position" ? { ...job, queue: { position: sse.data.position, eta_s: sse.data.eta_s } }
                                       : sse.data;
        showJob(job);
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  return job;
}

async function watch(job, gen) {
  if (!TERMINAL.has(job.status)) {
    try {
      job = await follow(job, gen);
    } catch (err) {  // no stream (or it broke): the long polls below take over
      if (gen !== generation) return;
    }
  }
  while (gen === generation && !TERMINAL.has(job.status)) {
    const started = performance.now();
    try {
      job = await fetchJob(job.id);
    } catch (err) {  // the network or a busy API: wait and ask again; anything else ends the watch
      if (!(err instanceof TypeError || [429, 502, 503, 504].includes(err.status))) throw err;
      setStatus(`${job.status}; the API did not answer, retrying…`);
      await sleep(err.retryAfter ? err.retryAfter * 1000 : RETRY_MS);
      continue;
    }
    if (gen !== generation) return;
    showJob(job);
    const elapsed = performance.now() - started;
    if (!TERMINAL.has(job.status) && elapsed < MIN_POLL_MS) await sleep(MIN_POLL_MS - elapsed);
  }
}

// -- drawing ---------------------------------------------------------------------------------------------

function setStatus(text) { $("status").textContent = text; }

function setStep(status) {
  // uploading -> queued -> running -> (succeeded | failed | canceled); a refused upload ends at the first step
  $("job").dataset.status = status;
  const finished = TERMINAL.has(status) || status === "refused";
  const at = status === "refused" ? 0 : TERMINAL.has(status) ? 3 : STEPS.indexOf(status);
  document.querySelectorAll(".steps li").forEach((li, i) => {
    li.classList.toggle("done", i < at);
    if (i === at) li.setAttribute("aria-current", "step"); else li.removeAttribute("aria-current");
    li.dataset.outcome = i === at && finished ? status : "";
    li.textContent = i === at && finished ? status : STEPS[i];
  });
}

function showProblem(code, detail) {
  $("problem-code").textContent = code;
  $("problem-detail").textContent = detail;
  $("problem").hidden = false;
}

function showFacts(job) {
  const facts = $("facts");
  facts.replaceChildren();
  const add = (term, value) => { facts.append(el("dt", {}, term), el("dd", {}, value)); };
  add("file", job.input.filename || "(unnamed)");
  const seconds = job.input.duration_s;
  add("duration", seconds < 60 ? `${seconds.toFixed(1)} s` : clock(seconds));
  add("job", job.id);
  add("priority", job.priority);
  if (job.dedup.reused) add("result", job.dedup.source === "cache" ? "reused from an identical earlier upload"
                                                                    : "shared with an identical job");
  const model = job.output?.model;
  if (model) add("model", `${model.id}${model.revision ? `@${model.revision}` : ""} on ${model.device}`);
}

function showBars(scores) {
  const rows = LABELS.map((label) => [label, scores[label] ?? 0]).sort((a, b) => b[1] - a[1]);
  $("bars").replaceChildren(...rows.map(([label, score]) => {
    const li = el("li", { "data-label": label, "data-score": String(score) });
    const track = el("span", { class: "track", "aria-hidden": "true" });
    const fill = el("span", { class: "fill" });
    fill.style.width = `${score * 100}%`;
    fill.style.background = colour(label);
    track.append(fill);
    li.append(el("span", { class: "name" }, label), track, el("span", { class: "pct" }, percent(score)));
    return li;
  }));
}

function showTimeline(timeline, duration) {
  $("timeline").replaceChildren(...timeline.map((w) => {
    const stack = el("span", { class: "stack" });
    for (const label of LABELS) {
      const part = el("span");
      part.style.height = `${(w.scores[label] ?? 0) * 100}%`;
      part.style.background = colour(label);
      stack.append(part);
    }
    const top = el("span", { class: "top" });
    top.style.background = colour(w.top_label);
    const summary = `${clock(w.start)}–${clock(w.end)}: ${w.top_label} ${percent(w.scores[w.top_label])}`;
    const column = el("div", { class: "window", role: "img", "aria-label": summary, title: summary,
                               "data-top": w.top_label });
    column.style.flexGrow = String(w.end - w.start);
    column.append(stack, top);
    return column;
  }));
  showAxis($("axis"), duration);
  showLegend($("legend"));
}

function showAxis(axis, duration) {
  const most = Math.max(2, Math.floor(axis.clientWidth / 64));  // ticks that fit side by side
  const step = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600].find((s) => duration / s <= most) || 7200;
  const ticks = [];
  for (let t = 0; t <= duration + 1e-6; t += step) ticks.push(t);
  axis.replaceChildren(...ticks.map((t) => {
    const tick = el("span", {}, clock(t));
    tick.style.left = `${(t / duration) * 100}%`;
    if (t > 0 && t / duration > 0.94) tick.className = "end";
    return tick;
  }));
}

function showLegend(legend) {
  legend.replaceChildren(...LABELS.map((label) => {
    const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
    swatch.style.background = colour(label);
    const li = el("li", {}, label);
    li.prepend(swatch);
    return li;
  }));
}

// One lane per speaker (found by diarization) or else per channel, on a shared time axis: each speech segment
// a box where it was spoken, in the colour of its top label, what was said (transcript=true) under its box and
// its audio events as marks on the lane, and under the lane its summary; under the lanes the conversation
// between them.
function showLanes(out, duration) {
  const segments = out.segments || [];
  const bySpeaker = out.conversation?.parties_are === "speakers";
  const parties = bySpeaker ? out.speakers : out.channels;
  const key = bySpeaker ? "speaker" : "channel";
  $("lanes").replaceChildren(...parties.map((channel) => {
    const track = el("div", { class: "lane-track", [`data-${key}`]: channel.name });
    const texts = el("div", { class: "lane-texts", [`data-${key}`]: channel.name });
    for (const s of segments.filter((seg) => seg[key] === channel.name)) {
      if (s.text !== undefined) {
        const said = el("span", { class: "segment-text", title: s.text, lang: s.language || "",
                                  "data-start": String(s.start) }, s.text);
        said.style.left = `${(s.start / duration) * 100}%`;
        said.style.width = `${((s.end - s.start) / duration) * 100}%`;
        texts.append(said);
      }
      for (const e of s.events || []) {
        const heard = `${clock(s.start)}: ${e.tag} ${percent(e.probability)}`;
        const mark = el("span", { class: "event", role: "img", "aria-label": heard, title: heard, "data-tag": e.tag,
                                  "data-start": String(s.start) }, "◆");
        mark.style.left = `${(s.start / duration) * 100}%`;
        track.append(mark);
      }
      const text = `${channel.name} ${clock(s.start)}–${clock(s.end)}: ${s.label} ${percent(s.score)}`;
      const box = el("span", { class: "segment", role: "img", "aria-label": text, title: text,
                               "data-label": s.label, "data-start": String(s.start), "data-end": String(s.end) });
      box.style.left = `${(s.start / duration) * 100}%`;
      box.style.width = `${((s.end - s.start) / duration) * 100}%`;
      box.style.background = colour(s.label);
      track.append(box);
    }
    const lane = el("div", { class: "lane", [`data-${key}`]: channel.name });
    lane.append(el("span", { class: "name" }, channel.name), track);
    if (texts.childElementCount) lane.append(texts);
    lane.append(el("p", { class: "lane-summary" }, laneSummary(channel)));
    return lane;
  }));
  showAxis($("lanes-axis"), duration);
  showLegend($("lanes-legend"));
  showConversation(out.conversation);
}

// The conversation's figures: per party its talk, turns and interruptions; then silences and overlaps.
function showConversation(talk) {
  const box = $("conversation");
  box.hidden = !talk;
  if (!talk) return;
  const seconds = (x) => `${x.toFixed(1)} s`;
  box.replaceChildren();
  const add = (term, value, party) => {
    box.append(el("dt", party ? { "data-party": party } : {}, term), el("dd", party ? { "data-party": party } : {}, value));
  };
  for (const p of talk.parties) {
    add(p.name, `talk ${seconds(p.talk_s)} (${percent(p.talk_ratio)}) · ${p.turns} turns · longest ${seconds(p.longest_monologue_s)}` +
                ` · interrupted others ${p.interrupted_others}× · was interrupted ${p.was_interrupted}×`, p.name);
  }
  add("silences", talk.non_talk.count ? `${talk.non_talk.count} longer than ${talk.non_talk.over_s} s, ` +
    `${seconds(talk.non_talk.total_s)} in all, longest ${seconds(talk.non_talk.longest_s)}` : `none longer than ${talk.non_talk.over_s} s`);
  add("overlaps", talk.overlap.count ? `${talk.overlap.count}, ${seconds(talk.overlap.total_s)} in all` : "none");
  add("interruptions", talk.interruptions.events.length
    ? talk.interruptions.events.map((i) => `${i.by} cut in on ${i.of} at ${clock(i.at)}`).join("; ") : "none");
}

function laneSummary(channel) {
  const s = channel.summary;
  if (channel.no_speech || !s.speech_s) return "no speech";
  const parts = [`speech ${s.speech_s.toFixed(1)} s`,
                 `mostly ${s.dominant_label} (${percent(s.share[s.dominant_label])} of speech)`];
  const best = s.strongest[s.dominant_label];
  if (best) parts.push(`strongest ${s.dominant_label} ${clock(best.start)}–${clock(best.end)} (${percent(best.score)})`);
  parts.push(s.changes.length === 1 ? "1 change" : `${s.changes.length} changes`);
  return parts.join(" · ");
}

function showJob(job) {
  setStep(job.status);
  showFacts(job);
  const queue = job.queue;
  const place = queue ? ` number ${queue.position + 1} in line${queue.eta_s != null ? `, done in about ${Math.ceil(queue.eta_s)} s` : ""}`
                      : "";
  const texts = { queued: `Queued:${place || " waiting for a worker"}…`, running: "Running: the model is listening…",
                  succeeded: job.output?.no_speech ? "Succeeded: no speech in the recording."
                                                   : `Succeeded: mostly ${job.output?.top_label}.`,
                  failed: "Failed.", canceled: "Canceled." };
  setStatus(texts[job.status] || job.status);
  if (job.status === "failed" && job.error) {
    showProblem(job.error.code, job.error.message + (job.error.retryable ? " (retryable: try again later)" : ""));
  }
  if (job.status !== "succeeded") return;
  const out = job.output;
  const lanes = Array.isArray(out.channels);  // speech segments, or channels scored each on its own
  const long = !lanes && Array.isArray(out.timeline) && out.timeline.length > 1;
  $("untrained").hidden = !out.model?.untrained;
  $("result").hidden = false;
  $("bars").hidden = !out.scores;
  $("timeline-box").hidden = !long;  // shown before drawing: the axis fits its ticks to the width
  $("lanes-box").hidden = !lanes;
  if (out.scores) showBars(out.scores);
  if (long) showTimeline(out.timeline, out.duration_s || job.input.duration_s);
  if (lanes) showLanes(out, out.duration_s || job.input.duration_s);
}

function reset(file) {
  $("job").hidden = false;
  $("problem").hidden = true;
  $("result").hidden = true;
  $("untrained").hidden = true;
  $("facts").replaceChildren(el("dt", {}, "file"), el("dd", {}, file.name));
  setStep("uploading");
}

function showRequestProblem(err) {
  let detail = err.message;
  if (err.retryAfter) detail += ` Retry after ${err.retryAfter} s.`;
  if (err.status === 401) {
    detail += " Enter an API key above (an operator makes one with `emotionq keys create CLIENT`).";
    $("key").focus();
  }
  showProblem(err.status ? `${err.status} ${err.code}` : err.code, detail);
}

async function submit(file) {
  const gen = ++generation;
  reset(file);
  setStatus("Uploading…");
  let job;
  try {
    job = await upload(file, $("priority").value, (f) => gen === generation && setStatus(`Uploading… ${percent(f)}`));
  } catch (err) {  // always a Problem: the API's answer, or none
    if (gen !== generation) return;
    setStep("refused");
    setStatus(err.status ? `Refused: HTTP ${err.status}.` : "Not sent.");
    showRequestProblem(err);
    return;
  }
  if (gen !== generation) return;
  showJob(job);
  try {
    await watch(job, gen);
  } catch (err) {
    if (gen !== generation || !(err instanceof Problem)) throw err;
    setStatus(`Lost track of the job: HTTP ${err.status}.`);
    showRequestProblem(err);
  }
}

// -- wiring ----------------------------------------------------------------------------------------------

$("key").value = localStorage.getItem(KEY_STORAGE) || "";
$("key").addEventListener("input", () => {
  const key = $("key").value.trim();
  if (key) localStorage.setItem(KEY_STORAGE, key); else localStorage.removeItem(KEY_STORAGE);
});

$("file").addEventListener("change", () => {
  const [file] = $("file").files;
  if (file) submit(file);
  $("file").value = "";  // choosing the same file again uploads it again
});

// A file dropped anywhere on the page is uploaded (rather than opened by the browser); the drop zone lights up.
const drop = $("drop");
for (const type of ["dragenter", "dragover"]) {
  document.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
}
document.addEventListener("dragleave", (e) => { if (!e.relatedTarget) drop.classList.remove("over"); });
document.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  const [file] = e.dataTransfer.files;
  if (file) submit(file);
});
