// The admin API, as the page calls it: the key from sessionStorage in X-API-Key, never in the URL; an
// error answer becomes an ApiFailure carrying the method, path, status and the API's own message.

export const KEY_ITEM = "llmkit-admin-key";

export class ApiFailure extends Error {
  constructor(message, status, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export async function api(method, path, body, accept = []) {
  const headers = { "X-API-Key": sessionStorage.getItem(KEY_ITEM) || "" };
  const init = { method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (exc) {
    throw new ApiFailure(`${method} ${path}: the server did not answer (${exc.message})`, 0, null);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok && !accept.includes(response.status)) {
    const said = data && data.error && data.error.message ? data.error.message : response.statusText;
    throw new ApiFailure(`${method} ${path}: ${response.status} ${said}`, response.status, data);
  }
  return data;
}

export function query(params) {
  const pairs = Object.entries(params).filter(([, v]) => v !== "" && v !== null && v !== undefined);
  return pairs.length ? "?" + new URLSearchParams(pairs).toString() : "";
}


// The body field an API error names (its `param`: "name", "quotas", ...), or null: a 400 / 409 / 422 about
// what a form sent is shown next to that form rather than in the banner.
export function fieldOf(error) {
  if (!(error instanceof ApiFailure) || ![400, 409, 422].includes(error.status)) return null;
  const said = error.body && error.body.error;
  if (!said) return null;
  if (error.status === 409 && said.code === "tenant_exists") return "name";
  return typeof said.param === "string" ? said.param : null;
}
