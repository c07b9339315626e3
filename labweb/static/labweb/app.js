// LabWeb's own small script: progressive enhancement only; every page works without it.
(function () {
  "use strict";
  // "/" jumps to the tree search, as on many code hosts; not while typing in a field.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target.closest && target.closest("input, textarea, select, [contenteditable]")) return;
    const search = document.getElementById("tree-search");
    if (search) {
      event.preventDefault();
      search.focus();
      search.select();
    }
  });
})();
