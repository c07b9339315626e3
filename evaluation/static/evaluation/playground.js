// The chat playground: both models answer the same conversation, each answer read from a streamed response
// (fetch and a ReadableStream) and written into its column as the pieces arrive. Without this script the form
// posts and the page returns with both answers whole.
(function () {
  "use strict";
  const form = document.getElementById("playground-form");
  if (!form || !window.fetch || !window.ReadableStream) return;
  const history = { left: [], right: [] };
  const token = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  const prompt = document.getElementById("prompt");
  const fresh = document.getElementById("new-chat");

  document.querySelectorAll(".seed-prompt").forEach(function (button) {
    button.addEventListener("click", function () { prompt.value = button.dataset.prompt; prompt.focus(); });
  });

  function line(column, role, text) {
    const node = document.createElement(role === "user" ? "p" : "pre");
    node.className = "turn " + role;
    node.textContent = text;
    column.querySelector(".turns").appendChild(node);
    return node;
  }

  async function ask(side, model, text) {
    const column = document.getElementById("chat-" + side);
    line(column, "user", text);
    const answer = line(column, "assistant", "");
    answer.dataset.streaming = "true";
    const body = new FormData();
    body.append("model", model);
    body.append("prompt", text);
    body.append("history", JSON.stringify(history[side]));
    let whole = "";
    try {
      const response = await fetch(form.dataset.stream, { method: "POST", body: body, headers: { "X-CSRFToken": token } });
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        whole += decoder.decode(value, { stream: true });
        answer.textContent = whole;
      }
    } catch (error) {
      whole += "\n[" + error + "]";
      answer.textContent = whole;
    }
    answer.dataset.streaming = "false";
    history[side].push({ role: "user", content: text }, { role: "assistant", content: whole });
  }

  form.addEventListener("submit", function (event) {
    if (event.submitter && event.submitter.id !== "send") return; // "Offer its questions" reloads the page
    event.preventDefault();
    const text = prompt.value.trim();
    const left = form.elements.left.value, right = form.elements.right.value;
    if (!text || !left || !right) { form.reportValidity(); return; }
    prompt.value = "";
    fresh.hidden = false;
    ask("left", left, text);
    ask("right", right, text);
  });

  fresh.addEventListener("click", function () {
    history.left = []; history.right = [];
    document.querySelectorAll(".chat .turns").forEach(function (turns) { turns.textContent = ""; });
    fresh.hidden = true;
  });
})();
