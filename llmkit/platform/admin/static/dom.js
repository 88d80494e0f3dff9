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

// A secret or key the API shows this once: `${box}-id` says whose, `${box}-text` holds it, `${box}-copy`
// copies it (focused, so the keyboard is on it too); `note` (if the box has one) says what else to know.
export function showOnce(box, whose, secret, note = "") {
  $(`${box}-id`).textContent = whose;
  $(`${box}-text`).textContent = secret;
  $(`${box}-copy`).textContent = "Copy";
  const noted = $(`${box}-note`);
  if (noted) {
    noted.textContent = note;
    noted.hidden = !note;
  }
  $(box).hidden = false;
  $(`${box}-copy`).focus();
}

// An API error about a form's input, next to the form (`${form}-error`), its input marked invalid.
export function showFormError(form, error, input) {
  clearFormError(form);
  $(`${form}-error`).textContent = error.message;
  $(`${form}-error`).hidden = false;
  if (input) {
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", `${form}-error`);
    input.focus();
  }
  $(`${form}-error`).scrollIntoView({ block: "nearest" });
}

export function clearFormError(form) {
  $(`${form}-error`).hidden = true;
  $(`${form}-error`).textContent = "";
  for (const input of $(form).querySelectorAll("[aria-invalid]")) {
    input.removeAttribute("aria-invalid");
    input.removeAttribute("aria-describedby");
  }
}

export function loaded(tab) {
  $(`panel-${tab}`).dataset.loaded = "true";
}

