// The review screen's keyboard: a approve, r reject, e edit, u undo, j/k next/previous, ? help.
// Progressive enhancement only: every action is a form or a link that works without this script.
(function () {
  "use strict";

  function current() {
    return document.getElementById("review-current");
  }

  function typing(target) {
    return target.closest && target.closest("input, textarea, select, [contenteditable]");
  }

  function submit(form) {
    if (!form) return;
    if (form.requestSubmit) form.requestSubmit();
    else form.submit();
  }

  // While htmx sends a decision or settles the new sample, keys wait: a form htmx has not yet taken over would
  // be submitted as a plain page load.
  function busy() {
    return !!document.querySelector(
      ".htmx-request, .htmx-swapping, .htmx-settling, #review-screen.htmx-added, #review-screen .htmx-added"
    );
  }

  // The next sample is already rendered (hidden) in the page: show it as soon as a decision is sent, so the
  // reviewer reads on while the server records it. The response replaces both with what the server says.
  document.addEventListener("htmx:beforeRequest", function (event) {
    const form = event.target.closest && event.target.closest("form[data-decide]");
    const upcoming = document.getElementById("review-upcoming");
    if (!form || !upcoming || !current() || !current().contains(form)) return;
    current().hidden = true;
    upcoming.hidden = false;
  });

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey && event.key === "Enter") {
      const edit = event.target.closest && event.target.closest("form[data-decide=edit]");
      if (edit) {
        event.preventDefault();
        submit(edit);
      }
      return;
    }
    if (event.key === "Escape") {
      const panel = current() && current().querySelector("details[data-role=edit-panel]");
      if (panel && panel.open) {
        panel.open = false;
        event.target.blur && event.target.blur();
      }
      return;
    }
    if (event.key === "Enter" && event.target.matches && event.target.matches("select[data-role=reason]")) {
      event.preventDefault();
      submit(event.target.form);
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    const here = current();
    if (!here) return;
    const click = function (selector) {
      const link = document.querySelector(selector);
      if (link) link.click();
    };
    if (busy() && "aruejk".includes(event.key)) {
      event.preventDefault();
      return;
    }
    switch (event.key) {
      case "a":
        submit(here.querySelector("form[data-decide=approve]"));
        break;
      case "r": {
        const reason = here.querySelector("select[data-role=reason]");
        if (reason) reason.focus();
        break;
      }
      case "e": {
        const panel = here.querySelector("details[data-role=edit-panel]");
        if (panel) {
          panel.open = true;
          panel.querySelector("textarea").focus();
        }
        break;
      }
      case "u":
        submit(document.getElementById("undo-form"));
        break;
      case "j":
      case "ArrowRight":
        click("#review-next");
        break;
      case "k":
      case "ArrowLeft":
        click("#review-previous");
        break;
      case "?": {
        const help = document.getElementById("review-help");
        if (help && !help.open) help.showModal();
        break;
      }
      default:
        return;
    }
    event.preventDefault();
  });
})();
