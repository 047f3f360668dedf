// dbward console behaviour; no inline scripts, so the Content-Security-Policy stays strict.
(function () {
  "use strict";

  function copy(selector, button) {
    const el = document.querySelector(selector);
    if (!el) return;
    const text = el.textContent.trim();
    const done = () => { const old = button.textContent; button.textContent = "Copied"; setTimeout(() => { button.textContent = old; }, 1200); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, () => select(el));
    } else {
      select(el);
    }
  }

  function select(el) {
    const range = document.createRange();
    range.selectNodeContents(el);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }

  function insertAtCursor(textarea, text) {
    const start = textarea.selectionStart, end = textarea.selectionEnd;
    textarea.value = textarea.value.slice(0, start) + text + textarea.value.slice(end);
    textarea.selectionStart = textarea.selectionEnd = start + text.length;
    textarea.focus();
  }

  document.addEventListener("click", function (ev) {
    const target = ev.target;
    if (!(target instanceof Element)) return;
    const copyBtn = target.closest("[data-copy]");
    if (copyBtn) { ev.preventDefault(); copy(copyBtn.getAttribute("data-copy"), copyBtn); return; }
    const ins = target.closest("[data-insert]");
    if (ins) {
      ev.preventDefault();
      const sql = document.getElementById("sql");
      if (sql) insertAtCursor(sql, ins.getAttribute("data-insert"));
    }
  });

  document.addEventListener("submit", function (ev) {
    const form = ev.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      ev.preventDefault();
      ev.stopImmediatePropagation();
    }
  }, true);

  document.addEventListener("keydown", function (ev) {
    const sql = document.getElementById("sql");
    if (!sql || ev.target !== sql) return;
    if ((ev.ctrlKey || ev.metaKey) && ev.key === "Enter") {
      ev.preventDefault();
      document.getElementById("run-button").click();
    } else if (ev.key === "Tab" && !ev.shiftKey) {
      ev.preventDefault();
      insertAtCursor(sql, "    ");
    }
  });
})();
