// faxbridge console: refresh the parts that change, and show times in the viewer's time zone.
(function () {
  "use strict";
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when)) { el.textContent = when.toLocaleString(); el.title = el.getAttribute("datetime"); }
    });
  }
  function refresh(el) {
    var url = el.getAttribute("data-refresh"), every = Number(el.getAttribute("data-every")) || 2, last = null;
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html !== null && html !== last) { last = html; el.innerHTML = html; localTimes(el); }
        })
        .catch(function () {})
        .then(function () { setTimeout(tick, every * 1000); });
    }
    setTimeout(tick, every * 1000);
  }
  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    document.querySelectorAll("[data-refresh]").forEach(refresh);
  });
})();
