// Live status over Server-Sent Events: fills the elements marked data-live="<event field>".
(function () {
  "use strict";
  if (!document.querySelector("[data-live]") || !window.EventSource) { return; }
  var source = new EventSource("/events");
  source.addEventListener("status", function (e) {
    var data;
    try { data = JSON.parse(e.data); } catch (err) { return; }
    document.querySelectorAll("[data-live]").forEach(function (el) {
      var v = data[el.getAttribute("data-live")];
      if (v !== undefined) { el.textContent = String(v); }
    });
  });
})();
