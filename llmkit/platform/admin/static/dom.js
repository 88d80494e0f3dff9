// DOM helpers. Text only: whatever the API returned becomes text nodes or textContent, never HTML.

export const $ = (id) => document.getElementById(id);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function fill(tbody, rows, empty, columns) {
  tbody.replaceChildren();
  if (!rows.length) {
    tbody.append(el("tr", {}, el("td", { colspan: columns, class: "muted" }, empty)));
    return;
  }
  for (const cells of rows) tbody.append(el("tr", {}, ...cells.map((c) => el("td", {}, c))));
}

export function when(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : "never";
}

export function percent(rate) {
  return rate === null || rate === undefined || Number.isNaN(rate) ? "—" : `${(rate * 100).toFixed(1)} %`;
}

export function tile(container, label, value, id) {
  container.append(el("div", { class: "tile", id }, el("span", { class: "label" }, label), el("strong", {}, value)));
}

export function showError(error) {
  $("alert-text").textContent = error instanceof Error ? error.message : String(error);
  $("alert").hidden = false;
}

export function clearError() {
  $("alert").hidden = true;
  $("alert-text").textContent = "";
}

// Every click handler and loader runs through here: an API error is shown, never swallowed.
export function guarded(action) {
  return async (event) => {
    if (event && event.preventDefault && event.type === "submit") event.preventDefault();
    try {
      await action(event);
    } catch (error) {
      showError(error);
    }
  };
}

export function confirmFirst(text) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  $("confirm-cancel").focus();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

export function button(label, action, extra = {}) {
  return el("button", { type: "button", onclick: guarded(action), ...extra }, label);
}

export async function copy(textId, buttonId) {
  const text = $(textId).textContent;
  try {
    await navigator.clipboard.writeText(text);
    $(buttonId).textContent = "Copied";
  } catch {
    // No clipboard permission (plain http on another host): select it for Ctrl+C instead.
    const range = document.createRange();
    range.selectNodeContents($(textId));
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    $(buttonId).textContent = "Selected: press Ctrl+C";
  }
}

export function loaded(tab) {
  $(`panel-${tab}`).dataset.loaded = "true";
}

