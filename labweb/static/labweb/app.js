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

// A select whose options carry a default for another field (the new-run form's teacher and its samples per
// leaf) puts the chosen option's default there, until the user types a value of their own. Capture phase: the
// value is in place before htmx, listening on the form, asks for the run's estimate.
(function () {
  "use strict";
  document.addEventListener("input", function (event) {
    if (event.target.dataset) event.target.dataset.typed = "true";
  }, true);
  document.addEventListener("change", function (event) {
    const select = event.target;
    if (!select.dataset || !select.dataset.defaultTarget) return;
    const target = document.getElementById(select.dataset.defaultTarget);
    const option = select.selectedOptions[0];
    if (!target || !option || target.dataset.typed === "true") return;
    if (option.dataset.default) target.value = option.dataset.default;
  }, true);
})();
