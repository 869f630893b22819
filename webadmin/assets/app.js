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

// The update page: its live block follows the updater over its own event stream.
(function () {
  "use strict";
  var live = document.querySelector("[data-update-source]");
  if (!live || !window.EventSource) { return; }
  var source = new EventSource(live.getAttribute("data-update-source"));
  source.addEventListener("update", function (e) {
    var data;
    try { data = JSON.parse(e.data); } catch (err) { return; }
    var text = live.querySelector("[data-update=text]");
    var bar = live.querySelector("[data-update=progress]");
    if (text) { text.textContent = String(data.text); }
    if (bar) {
      if (data.progress === null) { bar.removeAttribute("value"); }
      else { bar.value = data.progress; bar.textContent = data.progress + " %"; }
    }
    live.setAttribute("data-update-state", String(data.text));
  });
})();
