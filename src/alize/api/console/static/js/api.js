// The console's one door to the server: the admin JSON API, with the admin key the operator
// typed, kept in sessionStorage (this tab only). No cookie is ever used (credentials: "omit"),
// so no other site can make the browser call the API on the operator's behalf.

const STORE = "alize_admin_key";

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function adminKey() {
  return sessionStorage.getItem(STORE) || "";
}

export function setAdminKey(key) {
  if (key) sessionStorage.setItem(STORE, key);
  else sessionStorage.removeItem(STORE);
}

async function request(method, path, body, root = "/admin/api") {
  const headers = { Accept: "application/json" };
  const key = adminKey();
  if (key) headers.Authorization = "Bearer " + key;
  const init = { method, headers, credentials: "omit", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(root + path, init);
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new ApiError(response.status, error.message || "HTTP " + response.status, error.code);
  }
  return data;
}

export const api = {
  get: (path) => request("GET", path),
  post: (path, body) => request("POST", path, body === undefined ? {} : body),
  patch: (path, body) => request("PATCH", path, body),
  del: (path) => request("DELETE", path),
  // an OpenAI-compatible route, called with the same key (jobs belong to the key's project)
  v1: (path) => request("GET", path, undefined, "/v1"),
};

export function qs(params) {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") search.set(k, v);
  const text = search.toString();
  return text ? "?" + text : "";
}
