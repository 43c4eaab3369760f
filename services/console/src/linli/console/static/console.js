// SLA clocks: the deadline is rendered by the server; this counts it down every second.
(function () {
  "use strict";
  function pad(n) { return n < 10 ? "0" + n : String(n); }
  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-deadline]").forEach(function (el) {
      var left = Math.round((Date.parse(el.getAttribute("data-deadline")) - now) / 1000);
      if (isNaN(left)) { return; }
      if (left <= 0) {
        el.textContent = el.getAttribute("data-breached") || "0:00";
        el.classList.add("breached");
        return;
      }
      var h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
      el.textContent = (h > 0 ? h + ":" + pad(m) : String(m)) + ":" + pad(s);
      el.classList.toggle("soon", left < 900);
    });
    // The feed keeps the newest 50 lines.
    var feed = document.getElementById("events");
    while (feed && feed.children.length > 50) { feed.removeChild(feed.lastElementChild); }
  }
  document.addEventListener("DOMContentLoaded", function () { tick(); setInterval(tick, 1000); });
})();
