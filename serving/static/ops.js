// Keyboard shortcuts for the ops pages. Plain script, no dependencies.
// A letter chooses (focuses) the matching control; Enter confirms, as a focused button does.
(function () {
  "use strict";

  function typing(target) {
    var tag = target && target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (target && target.isContentEditable);
  }

  var rows = Array.prototype.slice.call(document.querySelectorAll("table.queue tbody tr[data-href]"));
  var selected = rows.length ? 0 : -1;

  function select(index) {
    if (!rows.length) return;
    selected = Math.max(0, Math.min(rows.length - 1, index));
    rows.forEach(function (row, i) { row.classList.toggle("selected", i === selected); });
    rows[selected].scrollIntoView({ block: "nearest" });
  }
  if (rows.length) select(0);
  rows.forEach(function (row, i) {
    row.addEventListener("click", function (event) {
      if (event.target.closest("a")) return;
      select(i);
      window.location.href = row.getAttribute("data-href");
    });
  });

  function arm(button) {
    document.querySelectorAll("button.armed").forEach(function (b) { b.classList.remove("armed"); });
    button.classList.add("armed");
    var hint = document.getElementById("armed-hint");
    if (hint) hint.textContent = "“" + button.textContent.replace(/\s+\S$/, "").trim() + "” chosen: Enter to confirm, Esc to cancel.";
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "Escape") {
      if (typing(event.target)) event.target.blur();
      document.querySelectorAll("button.armed").forEach(function (b) { b.classList.remove("armed"); b.blur(); });
      return;
    }
    if (typing(event.target)) return;
    if (event.key === "?") {
      var help = document.getElementById("keys-help");
      if (help && help.showModal) help.showModal();
      return;
    }
    if (rows.length) {
      if (event.key === "j" || event.key === "ArrowDown") { select(selected + 1); event.preventDefault(); return; }
      if (event.key === "k" || event.key === "ArrowUp") { select(selected - 1); event.preventDefault(); return; }
      if ((event.key === "Enter" || event.key === "o") && selected >= 0 && !(event.target && event.target.tagName === "A")) {
        window.location.href = rows[selected].getAttribute("data-href");
        event.preventDefault();
        return;
      }
    }
    var control = document.querySelector('[data-key="' + event.key + '"]:not([disabled])');
    if (!control) return;
    event.preventDefault();
    if (control.tagName === "A") { window.location.href = control.getAttribute("href"); return; }
    if (control.tagName === "BUTTON") {
      control.focus();
      arm(control);
      var other = control.getAttribute("data-focus");
      if (other && document.getElementById(other)) document.getElementById(other).focus();
      return;
    }
    control.focus();
  });

  // A partial amount typed and confirmed with Enter submits as a partial refund.
  var amount = document.getElementById("amount");
  if (amount) {
    amount.addEventListener("keydown", function (event) {
      if (event.key !== "Enter") return;
      event.preventDefault();
      var partial = document.querySelector('button[value="approve_partial"]');
      if (partial && !partial.disabled) partial.click();
    });
  }
})();
