// chaosbus dashboard: live updates over Server-Sent Events (/live), no page reloads.
// The experiments table is updated in place from the pushed rows; other pages fetch their main
// part again (?fragment=1) when the server says something changed. Also: confirmations on
// destructive forms. No inline script anywhere (the Content-Security-Policy forbids it).
(function () {
  "use strict";
  var body = document.body;

  function confirmForms(root) {
    root.querySelectorAll("form[data-confirm]").forEach(function (f) {
      if (f.dataset.bound) return;
      f.dataset.bound = "1";
      f.addEventListener("submit", function (ev) {
        if (!window.confirm(f.dataset.confirm)) ev.preventDefault();
      });
    });
  }
  confirmForms(document);
  if (!body || body.dataset.live !== "on" || !window.EventSource) return;

  var fetching = false, again = false;
  function refresh() {
    if (fetching) { again = true; return; }
    fetching = true;
    var url = new URL(window.location.href);
    url.searchParams.delete("msg");
    url.searchParams.set("fragment", "1");
    fetch(url.toString(), {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) return;
        var main = document.getElementById("main"), banner = document.getElementById("banner");
        if (main && main.innerHTML !== data.main) main.innerHTML = data.main;
        // The kill switch is redrawn only when its state changes: a reason being typed stays.
        var ks = document.getElementById("killswitch");
        var same = ks && data.banner.indexOf('data-halted="' + ks.dataset.halted + '"') !== -1;
        if (banner && !same) banner.innerHTML = data.banner;
        confirmForms(document);
        body.dataset.version = String(Number(body.dataset.version || 0) + 1);
      })
      .catch(function () {})
      .then(function () {
        fetching = false;
        if (again) { again = false; refresh(); }
      });
  }

  function updateRows(rows) {
    var table = document.querySelector("table.experiments tbody");
    var present = table ? table.querySelectorAll("tr[data-key]").length : 0;
    if (!table || present !== rows.length) return false;
    for (var i = 0; i < rows.length; i++) {
      var row = rows[i];
      var tr = table.querySelector('tr[data-key="' + CSS.escape(row.key) + '"]');
      if (!tr) return false;
      var phase = tr.querySelector(".phase");
      phase.textContent = row.phase;
      phase.className = "phase phase-" + row.phase.toLowerCase();
      tr.querySelector(".injected .n").textContent = String(row.injected);
      tr.querySelector(".injected .total").textContent = String(row.total);
    }
    return true;
  }

  var objects = null;
  var source = new EventSource("/live");
  source.addEventListener("changed", function (ev) {
    var data = JSON.parse(ev.data);
    // Only the nodes page shows the injectors' reports; elsewhere only objects and the kill switch count.
    var news = objects === null || data.objects !== objects;
    objects = data.objects;
    if (!news && body.dataset.page !== "/nodes") return;
    var halted = document.getElementById("killswitch");
    var haltChanged = halted && halted.dataset.halted !== String(data.halted);
    if (body.dataset.page === "/" && !haltChanged && updateRows(data.rows)) {
      body.dataset.version = String(Number(body.dataset.version || 0) + 1);
      return;
    }
    refresh();
  });
})();
