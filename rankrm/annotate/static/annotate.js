// rankrm annotate: plain JS, no build step. Text is only ever set with textContent, never
// parsed as HTML, so a response holding <script> shows as text.
"use strict";

const $ = (id) => document.getElementById(id);
const LONG = 600; // characters after which a response starts collapsed

let task = null;   // {assignment, task_id, prompt, responses: [{index, text}], previous}
let groups = [];   // [[response index, ...], ...] best first; a group of several is a tie
let focused = null; // response index of the focused card

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(data.error || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

function say(text, isError = false) {
  const box = $("message");
  box.textContent = text;
  box.className = isError ? "error" : "";
}

function showProgress(p) {
  $("progress").textContent =
    `${p.complete} / ${p.total} tasks complete · you: ${p.mine}`;
}

function textOf(index) {
  return task.responses.find((r) => r.index === index).text;
}

// ------------------------------------------------------------------ rendering

function renderPrompt(prompt) {
  const box = $("prompt");
  box.replaceChildren();
  const turns = typeof prompt === "string" ? [{role: null, content: prompt}] : prompt;
  for (const turn of turns) {
    const div = document.createElement("div");
    div.className = "turn" + (turn.role ? ` role-${turn.role}` : "");
    if (turn.role) {
      const who = document.createElement("span");
      who.className = "role";
      who.textContent = turn.role;
      div.append(who);
    }
    const pre = document.createElement("pre");
    pre.textContent = turn.content;
    div.append(pre);
    box.append(div);
  }
}

function card(index, rank, tied) {
  const li = document.createElement("div");
  li.className = "card";
  li.tabIndex = 0;
  li.dataset.index = index;
  const bar = document.createElement("div");
  bar.className = "bar";
  const badge = document.createElement("span");
  badge.className = "rank";
  badge.textContent = tied ? `${rank} (tie)` : `${rank}`;
  const tie = document.createElement("button");
  tie.type = "button";
  tie.className = "tie";
  tie.textContent = tied ? "Untie" : "Tie with above";
  tie.disabled = rank === 1 && !tied;
  tie.addEventListener("click", () => { toggleTie(index); });
  bar.append(badge, tie);
  const body = document.createElement("pre");
  body.className = "text";
  const text = textOf(index);
  body.textContent = text;
  li.append(bar, body);
  if (text.length > LONG) {
    li.classList.add("collapsed");
    const more = document.createElement("button");
    more.type = "button";
    more.className = "more";
    more.textContent = "Show all";
    more.addEventListener("click", () => {
      const open = li.classList.toggle("collapsed");
      more.textContent = open ? "Show all" : "Show less";
    });
    li.append(more);
  }
  li.addEventListener("focus", () => { focused = index; });
  bar.addEventListener("pointerdown", startDrag);
  return li;
}

function render() {
  const list = $("ranking");
  list.replaceChildren();
  groups.forEach((group, g) => {
    const li = document.createElement("li");
    li.className = "group" + (group.length > 1 ? " tied" : "");
    li.dataset.rank = g + 1;
    for (const index of group) li.append(card(index, g + 1, group.length > 1));
    list.append(li);
  });
  if (focused !== null) {
    const el = list.querySelector(`.card[data-index="${focused}"]`);
    if (el) el.focus();
  }
}

// ------------------------------------------------------------------ moving cards

function groupOf(index) {
  return groups.findIndex((g) => g.includes(index));
}

function takeOut(index) {
  const g = groupOf(index);
  groups[g] = groups[g].filter((i) => i !== index);
  if (groups[g].length === 0) groups.splice(g, 1);
}

function placeAt(index, position) { // as its own group at 0-based position
  takeOut(index);
  groups.splice(Math.max(0, Math.min(position, groups.length)), 0, [index]);
  render();
}

function move(index, delta) {
  const g = groupOf(index);
  if (groups[g].length > 1) { // leave the tie, just above or below it
    placeAt(index, delta < 0 ? g : g + 1);
    return;
  }
  placeAt(index, g + delta);
}

function toggleTie(index) {
  const g = groupOf(index);
  if (groups[g].length > 1) {
    takeOut(index);
    groups.splice(g + 1, 0, [index]);
  } else if (g > 0) {
    takeOut(index);
    groups[g - 1].push(index);
  }
  render();
}

function tieWith(index, other) {
  if (index === other) return;
  takeOut(index);
  groups[groupOf(other)].push(index);
  render();
}

function cards() {
  return Array.from($("ranking").querySelectorAll(".card"));
}

function focusStep(delta) {
  const all = cards();
  const at = all.findIndex((c) => Number(c.dataset.index) === focused);
  const next = all[Math.max(0, Math.min(all.length - 1, at + delta))];
  if (next) next.focus();
}

// Drag with pointer events (mouse, pen and touch alike): the top or bottom third of a card
// drops before or after it, the middle ties with it.
let drag = null;

function dropTarget(x, y) {
  const el = document.elementFromPoint(x, y);
  const target = el && el.closest(".card");
  if (!target || Number(target.dataset.index) === drag.index) return null;
  const box = target.getBoundingClientRect();
  const where = (y - box.top) / box.height;
  const zone = where < 1 / 3 ? "before" : where > 2 / 3 ? "after" : "tie";
  return {el: target, index: Number(target.dataset.index), zone};
}

function startDrag(event) {
  if (event.target.closest("button")) return;
  const el = event.currentTarget.closest(".card");
  drag = {index: Number(el.dataset.index), el, target: null};
  el.classList.add("dragging");
  event.preventDefault();
  document.addEventListener("pointermove", onDrag);
  document.addEventListener("pointerup", endDrag, {once: true});
}

function onDrag(event) {
  for (const c of cards()) c.classList.remove("drop-before", "drop-after", "drop-tie");
  drag.target = dropTarget(event.clientX, event.clientY);
  if (drag.target) drag.target.el.classList.add(`drop-${drag.target.zone}`);
}

function endDrag(event) {
  document.removeEventListener("pointermove", onDrag);
  const target = dropTarget(event.clientX, event.clientY) || drag.target;
  const index = drag.index;
  drag = null;
  focused = index;
  if (!target) { render(); return; }
  if (target.zone === "tie") { tieWith(index, target.index); return; }
  takeOut(index);
  const g = groupOf(target.index);
  groups.splice(target.zone === "before" ? g : g + 1, 0, [index]);
  render();
}

// ------------------------------------------------------------------ the flow

function show(body) {
  showProgress(body.progress);
  if (body.annotator) $("who").textContent = body.annotator;
  task = body.task;
  $("cannot-form").hidden = true;
  $("work").hidden = task === null;
  $("done").hidden = task !== null;
  if (task === null) return;
  renderPrompt(task.prompt);
  groups = task.previous
    ? task.previous.map((g) => g.slice())
    : task.responses.map((r) => [r.index]);
  focused = groups[0][0];
  render();
  $("reason").value = task.previous_reason || "";
}

async function act(path, body, done) {
  try {
    const result = await api(path, body);
    if (result.progress) showProgress(result.progress);
    say(done);
    show(await api("/api/next"));
  } catch (error) {
    say(error.message, true);
    if (error.status === 409) show(await api("/api/next")); // expired: take the next one
    if (error.status === 401) start();
  }
}

const submit = () => act("/api/submit", {assignment: task.assignment, order: groups}, "Ranking saved.");
const skip = () => act("/api/skip", {assignment: task.assignment}, "Skipped.");

async function undo() {
  try {
    show(await api("/api/undo", {}));
    say("Your last answer is open again.");
  } catch (error) {
    say(error.message, true);
  }
}

function askReason() {
  $("cannot-form").hidden = false;
  $("reason").focus();
}

function onKey(event) {
  if (!task || event.target.closest("input, textarea") || event.ctrlKey || event.metaKey) return;
  const key = event.key;
  if (focused !== null && (key === "ArrowUp" || key === "ArrowDown" || key === "k" || key === "j")) {
    const delta = key === "ArrowUp" || key === "k" ? -1 : 1;
    if (event.shiftKey) move(focused, delta); else focusStep(delta);
  } else if (focused !== null && /^[1-9]$/.test(key)) {
    placeAt(focused, Number(key) - 1);
  } else if (focused !== null && key === "t") {
    toggleTie(focused);
  } else if (key === "Enter" && !event.target.closest("button")) {
    submit();
  } else if (key === "s") {
    skip();
  } else if (key === "c") {
    askReason();
  } else if (key === "u") {
    undo();
  } else {
    return;
  }
  event.preventDefault();
}

async function start() {
  const config = await api("/api/config");
  if (config.guidelines) {
    $("guidelines-text").textContent = config.guidelines;
    $("guidelines").hidden = false;
  }
  $("name-field").hidden = config.auth;
  $("token-field").hidden = !config.auth;
  try {
    show(await api("/api/next"));
    $("login").hidden = true;
  } catch (error) {
    if (error.status !== 401) throw error;
    $("work").hidden = true;
    $("login").hidden = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const me = await api("/api/login", {name: $("name").value, token: $("token").value});
      $("who").textContent = me.name;
      $("login").hidden = true;
      show(await api("/api/next"));
    } catch (error) {
      say(error.message, true);
    }
  });
  $("submit").addEventListener("click", submit);
  $("skip").addEventListener("click", skip);
  $("undo").addEventListener("click", undo);
  $("undo-done").addEventListener("click", undo);
  $("cannot").addEventListener("click", askReason);
  $("cannot-cancel").addEventListener("click", () => { $("cannot-form").hidden = true; });
  $("cannot-form").addEventListener("submit", (event) => {
    event.preventDefault();
    act("/api/cannot-rank", {assignment: task.assignment, reason: $("reason").value}, "Flagged.");
  });
  document.addEventListener("keydown", onKey);
  start();
});
