// Small progressive enhancements; every page works without them.
document.addEventListener("DOMContentLoaded", () => {
  // "Select all" checkboxes of list tables.
  for (const all of document.querySelectorAll("input[data-select-all]")) {
    all.addEventListener("change", () => {
      for (const box of document.querySelectorAll(`input[name="${all.dataset.selectAll}"]`)) {
        box.checked = all.checked;
      }
    });
  }
  // Shift-click selects a range of rows.
  let last = null;
  for (const box of document.querySelectorAll("table.list input[type=checkbox][name]")) {
    box.addEventListener("click", (event) => {
      const boxes = [...document.querySelectorAll(`table.list input[name="${box.name}"]`)];
      if (event.shiftKey && last) {
        const [a, b] = [boxes.indexOf(last), boxes.indexOf(box)].sort((x, y) => x - y);
        for (const other of boxes.slice(a, b + 1)) other.checked = box.checked;
      }
      last = box;
    });
  }
  // Show or hide columns; the choice is remembered per list.
  for (const toggle of document.querySelectorAll("input[data-column]")) {
    const key = `emm-columns:${location.pathname}:${toggle.dataset.column}`;
    const apply = () => {
      for (const cell of document.querySelectorAll(`[data-col="${toggle.dataset.column}"]`)) {
        cell.classList.toggle("hidden-col", !toggle.checked);
      }
    };
    if (localStorage.getItem(key) === "hidden") toggle.checked = false;
    apply();
    toggle.addEventListener("change", () => {
      localStorage.setItem(key, toggle.checked ? "shown" : "hidden");
      apply();
    });
  }
  // "Use system-wide settings": the values follow the switch at once, so one save overrides
  // them (without script, saving the switch first enables them).
  for (const toggle of document.querySelectorAll("input[name=use_system_wide]:not([disabled])")) {
    toggle.addEventListener("change", () => {
      for (const input of toggle.form.querySelectorAll('[name^="value."], input[name=field]')) {
        input.disabled = toggle.checked;
      }
    });
  }
  // Forms that destroy something ask first, naming what they act on.
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});
