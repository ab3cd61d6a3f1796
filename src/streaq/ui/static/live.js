// streaq UI: live refresh. Every few seconds the page is fetched again and the parts marked
// data-live (with an id) are swapped for their fresh copies; a button pauses it (remembered in
// localStorage). One script file served by the UI itself: the Content-Security-Policy allows no
// inline code.
(() => {
  "use strict";
  const body = document.body;
  const toggle = document.getElementById("live-toggle");
  const interval = Number(body.dataset.refreshMs) || 3000;
  const KEY = "streaq-live-paused";
  if (!toggle) return;
  if (document.querySelectorAll("[data-live]").length === 0) {
    toggle.hidden = true; // nothing on this page changes by itself
    return;
  }
  let paused = localStorage.getItem(KEY) === "1";
  let busy = false;
  let ticks = 0;
  let refreshes = 0;

  function show() {
    toggle.textContent = paused ? "Resume live refresh" : "Pause live refresh";
    toggle.setAttribute("aria-pressed", String(paused));
    body.dataset.live = paused ? "paused" : "on";
  }

  let again = false; // an event came during a refresh: refresh once more after it

  async function refresh() {
    if (busy) again = true;
    if (paused || busy || document.hidden) return;
    busy = true;
    try {
      const answer = await fetch(location.href, { credentials: "same-origin", cache: "no-store" });
      if (!answer.ok) return; // the task expired, the server restarts...: try again later
      const fresh = new DOMParser().parseFromString(await answer.text(), "text/html");
      for (const old of document.querySelectorAll("[data-live]")) {
        const next = fresh.getElementById(old.id);
        // never pull a form from under the user's cursor or keyboard
        if (next && !old.contains(document.activeElement)) old.replaceWith(next);
      }
      refreshes += 1;
      body.dataset.refreshes = String(refreshes);
    } catch (error) {
      // offline for a moment: the next tick tries again
    } finally {
      busy = false;
      if (again) {
        again = false;
        refresh();
      }
    }
  }

  // a task's page: refresh at once when the task's event stream (server-sent events) says that
  // something happened; the periodic refresh goes on as well
  const stream = document.getElementById("task-events");
  if (stream && "EventSource" in window) {
    const FINAL = ["finished", "failed", "aborted", "dead_lettered"];
    const source = new EventSource(stream.dataset.events);
    for (const kind of ["enqueued", "started", "progress", "retried", ...FINAL]) {
      source.addEventListener(kind, () => {
        if (FINAL.includes(kind)) source.close();
        body.dataset.events = String(Number(body.dataset.events || 0) + 1);
        refresh();
      });
    }
  }

  toggle.addEventListener("click", () => {
    paused = !paused;
    localStorage.setItem(KEY, paused ? "1" : "0");
    show();
  });
  show();
  setInterval(() => {
    ticks += 1;
    body.dataset.ticks = String(ticks); // lets a test see time pass while paused
    refresh();
  }, interval);
})();
