// Keeps Kiln's pages current: the build list, a build's graph and a running task's log are
// sent again by the server (Server-Sent Events) as they change. No framework, no build step.
"use strict";

// Replaces `element`'s content with each event `name` from its `data-live` stream; the
// stream is closed once `done(element)` says there is nothing more to come.
function follow(element, name, done) {
  const source = new EventSource(element.dataset.live);
  source.addEventListener(name, (event) => {
    element.innerHTML = event.data;
    if (done && done(element)) source.close();
  });
  return source;
}

// A log's new lines, numbered after the last one shown.
function followLog(log) {
  let next = Number(log.dataset.next);
  const source = new EventSource(log.dataset.live);
  source.addEventListener("lines", (event) => {
    const atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 4;
    for (const line of JSON.parse(event.data)) {
      const row = document.createElement("div");
      row.className = line.kiln ? "line kiln" : "line";
      row.id = "L" + next;
      const number = document.createElement("a");
      number.className = "n";
      number.href = "#L" + next;
      number.textContent = String(next);
      const text = document.createElement("span");
      // Rendered and escaped by the server, as the page's own lines are.
      text.innerHTML = line.html;
      row.append(number, text);
      log.append(row);
      next += 1;
    }
    if (atBottom) window.scrollTo(0, document.body.scrollHeight);
  });
  source.addEventListener("end", (event) => {
    source.close();
    const status = document.getElementById("log-status");
    if (status) status.textContent = event.data;
  });
}

// A link to a line of another page of the log goes to that page.
function toLine(log) {
  const match = /^#L(\d+)$/.exec(window.location.hash);
  if (!match || document.getElementById("L" + match[1])) return;
  const page = Math.ceil(Number(match[1]) / Number(log.dataset.pageLines));
  if (page >= 1 && page <= Number(log.dataset.pages) && page !== Number(log.dataset.page)) {
    window.location.replace(log.dataset.base + "&page=" + page + window.location.hash);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const rows = document.getElementById("rows");
  if (rows && rows.dataset.live) follow(rows, "rows");
  const graph = document.getElementById("graph");
  const ended = (element) => element.querySelector("[data-final]") !== null;
  if (graph && graph.dataset.live && !ended(graph)) follow(graph, "graph", ended);
  const log = document.getElementById("log");
  if (log) {
    toLine(log);
    if (log.dataset.live) followLog(log);
  }
});
