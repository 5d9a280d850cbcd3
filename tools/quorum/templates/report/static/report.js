// Sorting and filtering for the package table, with no framework and no
// network: the table is complete without this script.
"use strict";
(function () {
  var table = document.getElementById("package-table");
  if (!table) { return; }
  var body = table.tBodies[0];
  var heads = table.tHead.rows[0].cells;
  function key(row, i, numeric) {
    var cell = row.cells[i];
    var v = cell.getAttribute("data-sort");
    if (v === null) { v = cell.textContent.trim(); }
    return numeric ? parseFloat(v) : v.toLowerCase();
  }
  Array.prototype.forEach.call(heads, function (th, i) {
    th.setAttribute("tabindex", "0");
    function sort() {
      var numeric = th.getAttribute("data-type") === "number" || th.getAttribute("data-type") === "order";
      var asc = th.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a, i, numeric), y = key(b, i, numeric);
        var c = x < y ? -1 : (x > y ? 1 : 0);
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    }
    th.addEventListener("click", sort);
    th.addEventListener("keydown", function (e) { if (e.key === "Enter") { sort(); } });
  });
  var filter = document.getElementById("filter");
  var shown = document.getElementById("shown");
  function apply() {
    var words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    var n = 0;
    Array.prototype.forEach.call(body.rows, function (r) {
      var text = r.textContent.toLowerCase();
      var ok = words.every(function (w) { return text.indexOf(w) >= 0; });
      r.classList.toggle("hidden", !ok);
      if (ok) { n += 1; }
    });
    shown.textContent = n + " of " + body.rows.length + " shown";
  }
  filter.addEventListener("input", apply);
  // index.html#filter=WORDS opens with the filter set: a link can say
  // "the mismatches" without a server.
  var m = /^#filter=(.*)$/.exec(window.location.hash);
  if (m) { filter.value = decodeURIComponent(m[1]); }
  apply();
})();
