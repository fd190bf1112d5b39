// faxbridge console: keep the parts that change current, and show times in the viewer's time zone.
//
// Each element with data-refresh holds a fragment the server renders at that URL. The page listens to
// the server's events (GET /events: "jobs" messages listing the ids of the jobs that changed) and
// fetches again the fragments those jobs appear in: an element with data-job only for that job, the
// others (the queue, the overview) for any. Changes made by other processes (a shell's `faxbridge
// send`, another node of a shared store) are not told, so every fragment is also fetched every
// data-slow seconds; without the events (an old browser, a proxy that buffers, too many pages open)
// every data-every seconds instead. The header says which ("live" or "polling").
(function () {
  "use strict";
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when)) { el.textContent = when.toLocaleString(); el.title = el.getAttribute("datetime"); }
    });
  }
  var live = false, GAP_MS = 400;                       // at most a fetch per part every GAP_MS
  function show(mode) {
    live = mode === "live";
    document.documentElement.setAttribute("data-live", mode);
    var badge = document.getElementById("live");
    if (badge) {
      badge.textContent = live ? "live" : "polling";
      badge.title = live ? "this page updates as jobs move" : "this page checks for changes every few seconds";
    }
  }
  function Part(el) {
    this.el = el;
    this.url = el.getAttribute("data-refresh");
    this.job = el.getAttribute("data-job");
    this.fast = (Number(el.getAttribute("data-every")) || 2) * 1000;
    this.slow = (Number(document.body.getAttribute("data-slow")) || 15) * 1000;
    this.busy = false;
    this.again = false;
    this.last = null;
    this.timer = null;
    this.soon = null;
    this.started = 0;
    this.arm();
  }
  Part.prototype.arm = function () {
    var self = this;
    clearTimeout(this.timer);
    this.timer = setTimeout(function () { self.fetch(); }, live ? this.slow : this.fast);
  };
  Part.prototype.fetch = function () {               // now, or as soon as the last one is done
    var self = this, wait = this.started + GAP_MS - Date.now();
    if (this.busy) { this.again = true; return; }       // one request at a time; one more after it
    if (wait > 0) {                                     // a burst of changes: one fetch for all of it
      if (!this.soon) { this.soon = setTimeout(function () { self.soon = null; self.fetch(); }, wait); }
      return;
    }
    this.busy = true;
    this.started = Date.now();
    fetch(this.url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html !== null && html !== self.last) { self.last = html; self.el.innerHTML = html; localTimes(self.el); }
      })
      .catch(function () {})
      .then(function () {
        self.busy = false;
        if (self.again) { self.again = false; self.fetch(); } else { self.arm(); }
      });
  };
  Part.prototype.concerns = function (ids) {
    return !this.job || ids === "*" || ids.indexOf(this.job) >= 0;
  };
  function listen(parts) {
    var url = document.body.getAttribute("data-events");
    if (!parts.length) { return; }                      // nothing on this page changes
    if (!url || !window.EventSource) { show("polling"); return; }
    var source = new EventSource(url), failures = 0;
    source.onopen = function () {
      failures = 0;
      show("live");
      parts.forEach(function (p) { p.fetch(); });       // what moved while the stream was not open
    };
    source.addEventListener("jobs", function (e) {
      var ids;
      try { ids = JSON.parse(e.data); } catch (err) { ids = "*"; }
      parts.forEach(function (p) { if (p.concerns(ids)) { p.fetch(); } });
    });
    source.onerror = function () {
      show("polling");
      parts.forEach(function (p) { p.arm(); });
      failures += 1;
      if (source.readyState === EventSource.CLOSED || failures > 20) { source.close(); }
    };
  }
  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    var parts = [];
    document.querySelectorAll("[data-refresh]").forEach(function (el) { parts.push(new Part(el)); });
    listen(parts);
  });
})();
