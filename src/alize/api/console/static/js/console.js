// The admin console: a key prompt, then one view per tab, each built from the admin API's JSON
// with dom.js (every value a text node; no markup is ever parsed from a string).

import { h, clear, $ } from "./dom.js";
import { api, ApiError, adminKey, setAdminKey, qs } from "./api.js";
import { tokensChart } from "./chart.js";
import { histograms, quantile } from "./latency.js";

const TABS = {
  deployments: ["Deployments", deploymentsView],
  usage: ["Usage", usageView],
  jobs: ["Jobs", jobsView],
  keys: ["Keys", keysView],
  projects: ["Projects", projectsView],
  users: ["Chat users", usersView],
  catalog: ["Catalog", catalogView],
  audit: ["Audit log", auditView],
};
let current = "deployments";
let timer = null;

const main = () => $("#main");
const mib = (bytes) => (bytes ? (bytes / 1048576).toFixed(0) + " MiB" : "–");
const money = (micros, currency) => (micros / 1e6).toFixed(4) + " " + (currency || "");
const when = (iso) => (iso ? iso.replace("T", " ").slice(0, 19) : "–");

function table(columns, rows, attrs = {}) {
  const head = h("tr", {}, columns.map(([label, , cls]) => h("th", { class: cls }, label)));
  const body = rows.map((row) =>
    h("tr", { dataset: { id: row.id || row.name || "" } }, columns.map(([, cell, cls]) => h("td", { class: cls }, cell(row)))),
  );
  return h("table", attrs, h("thead", {}, head), h("tbody", {}, body));
}

function failure(error) {
  return h("p", { class: "error", role: "alert" }, error instanceof ApiError ? `${error.message} (${error.status})` : String(error));
}

// A button that asks once more before it acts (no window.confirm: it blocks and tests hang).
function twoStep(label, action) {
  const button = h("button", { class: "danger", type: "button", text: label });
  button.addEventListener("click", async () => {
    if (button.dataset.armed !== "1") {
      button.dataset.armed = "1";
      button.textContent = "Confirm " + label.toLowerCase();
      return;
    }
    button.disabled = true;
    try {
      await action();
    } catch (error) {
      button.after(failure(error));
    }
  });
  return button;
}

// ---------------------------------------------------------------- login

function loginView(message) {
  stopTimer();
  $("#tabs").hidden = true;
  $("#logout").hidden = true;
  const input = h("input", { id: "admin-key", type: "password", autocomplete: "off", required: true, size: 48 });
  const form = h(
    "form",
    { id: "login", on: { submit: (e) => { e.preventDefault(); setAdminKey(input.value.trim()); start(); } } },
    h("label", {}, "Admin API key", input),
    h("button", { type: "submit", text: "Open the console" }),
  );
  clear(main()).append(h("h2", { text: "Sign in" }), message ? h("p", { class: "error", role: "alert", text: message }) : "", form);
  input.focus();
  document.body.dataset.ready = "true";
}

async function start() {
  try {
    await api.get("/projects");
  } catch (error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      const had = adminKey();
      setAdminKey("");
      loginView(had ? (error.status === 403 ? "That key is not an admin key." : "That key is not valid.") : "");
      return;
    }
    clear(main()).append(failure(error));
    return;
  }
  $("#tabs").hidden = false;
  $("#logout").hidden = !adminKey();
  show(current);
}

// ---------------------------------------------------------------- tabs

function stopTimer() {
  if (timer) clearInterval(timer);
  timer = null;
}

async function show(name) {
  stopTimer();
  document.body.dataset.ready = "false";
  current = name;
  for (const button of $("#tabs").children) {
    if (button.dataset.tab === name) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  const view = h("section", { id: "view-" + name }, h("p", { class: "muted", text: "Loading…" }));
  clear(main()).append(view);
  try {
    await TABS[name][1](view);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return loginView("The key stopped working.");
    clear(view).append(failure(error));
  }
  document.body.dataset.ready = "true";
}

// ---------------------------------------------------------------- views

async function deploymentsView(view) {
  const render = async () => {
    const { data, memory } = await api.get("/deployments");
    const scale = (d) => {
      const input = h("input", { type: "number", min: 1, max: 16, value: d.replicas, size: 3, "aria-label": "replicas of " + d.name });
      const go = h("button", { type: "button", text: "Scale" });
      go.addEventListener("click", async () => {
        try { await api.patch("/deployments/" + encodeURIComponent(d.name), { replicas: Number(input.value) }); await render(); }
        catch (error) { go.after(failure(error)); }
      });
      return h("span", {}, input, go);
    };
    const safety = (d) => (d.safety ? [d.safety.input ? "input" : "", d.safety.output ? "output" : ""].filter(Boolean).join(" + ") || "off" : "off");
    clear(view).append(
      h("h2", { text: "Deployments" }),
      h("p", { class: "muted" }, `Memory: ${mib(memory.estimated_in_use_bytes)} estimated in use of ${mib(memory.budget_bytes)}; ${memory.evictions} evictions. Refreshes every 5 s.`),
      table(
        [
          ["Name", (d) => d.name],
          ["Model", (d) => d.model],
          ["Engine", (d) => d.engine],
          ["State", (d) => (d.state.loaded ? "loaded" : "unloaded")],
          ["Slots busy", (d) => `${d.state.busy_slots} / ${d.parallel * d.replicas}`, "num"],
          ["Waiting", (d) => String(d.state.waiting), "num"],
          ["Memory", (d) => mib(d.state.memory_held_bytes || d.state.memory_estimate_bytes), "num"],
          ["Served", (d) => String(d.state.served_per_replica.reduce((a, b) => a + b, 0)), "num"],
          ["Safety", safety],
          ["Replicas", scale],
          ["", (d) => twoStep("Undeploy", async () => { await api.del("/deployments/" + encodeURIComponent(d.name)); await render(); })],
        ],
        data,
        { id: "deployments" },
      ),
    );
  };
  await render();
  timer = setInterval(() => render().catch(() => stopTimer()), 5000);
}

async function usageView(view) {
  const [projects, byDay, byProject, byDeployment] = await Promise.all([
    api.get("/projects"),
    api.get("/usage" + qs({ group_by: "day" })),
    api.get("/usage" + qs({ group_by: "project" })),
    api.get("/usage" + qs({ group_by: "deployment" })),
  ]);
  const currency = Object.fromEntries(projects.data.map((p) => [p.id, p.currency]));
  const totals = [
    ["Requests", (r) => String(r.requests), "num"],
    ["Errors", (r) => String(r.errors), "num"],
    ["Prompt tokens", (r) => String(r.prompt_tokens), "num"],
    ["Completion tokens", (r) => String(r.completion_tokens), "num"],
    ["Cached", (r) => String(r.cached_tokens), "num"],
  ];
  const latency = await latencyTable();
  const csv = h("button", { type: "button", id: "usage-csv", text: "Export CSV (by day)" });
  csv.addEventListener("click", () => downloadCsv("day"));
  clear(view).append(
    h("h2", { text: "Usage (last 30 days)" }),
    tokensChart(byDay.data),
    h("p", {}, csv),
    h("h3", { text: "By project" }),
    table([["Project", (r) => r.group], ...totals, ["Spend", (r) => money(r.cost_micros, currency[r.group]), "num"]], byProject.data, { id: "usage-projects" }),
    h("h3", { text: "By deployment" }),
    table([["Deployment", (r) => r.group], ...totals, ["Cost (µ-units)", (r) => String(r.cost_micros), "num"]], byDeployment.data, { id: "usage-deployments" }),
    h("h3", { text: "Latency since the server started (from /metrics)" }),
    latency,
  );
}

async function latencyTable() {
  const response = await fetch("/metrics", { headers: adminKey() ? { Authorization: "Bearer " + adminKey() } : {}, credentials: "omit" });
  if (!response.ok) return h("p", { class: "muted", text: `No metrics (HTTP ${response.status}).` });
  const text = await response.text();
  const ttft = histograms(text, "alize_time_to_first_token_seconds");
  const e2e = histograms(text, "alize_e2e_request_latency_seconds");
  const ms = (v) => (v === null ? "–" : (v * 1000).toFixed(0));
  const rows = [...e2e.keys()].sort().map((name) => ({ name, ttft: ttft.get(name) || [], e2e: e2e.get(name) }));
  const cols = (label, key) => [50, 95, 99].map((q) => [`${label} p${q} (ms)`, (r) => ms(quantile(q / 100, r[key])), "num"]);
  return table([["Deployment", (r) => r.name], ["Requests", (r) => String(r.e2e.at(-1)[1]), "num"], ...cols("TTFT", "ttft"), ...cols("E2E", "e2e")], rows, { id: "latency" });
}

async function jobsView(view) {
  const render = async () => {
    const batches = await api.v1("/batches?limit=50");
    const progress = (b) => {
      const c = b.request_counts;
      const done = c.completed + c.failed;
      return h("span", {}, h("progress", { max: c.total || 1, value: done }), ` ${done} / ${c.total}` + (c.failed ? ` (${c.failed} failed)` : ""));
    };
    const at = (t) => (t ? when(new Date(t * 1000).toISOString()) : "–");
    clear(view).append(
      h("h2", { text: "Batch jobs" }),
      h("p", { class: "muted", text: "The batches of this key's project, newest first. Refreshes every 5 s." }),
      table(
        [["Batch", (b) => b.id], ["Model", (b) => b.model || "–"], ["Status", (b) => b.status], ["Progress", progress], ["Output tokens", (b) => String(b.usage ? b.usage.output_tokens : 0), "num"], ["Created", (b) => at(b.created_at)], ["Finished", (b) => at(b.completed_at || b.failed_at || b.cancelled_at)]],
        batches.data,
        { id: "batches" },
      ),
    );
  };
  await render();
  timer = setInterval(() => render().catch(() => stopTimer()), 5000);
}

async function downloadCsv(groupBy) {
  const response = await fetch("/admin/api/usage.csv" + qs({ group_by: groupBy }), {
    headers: adminKey() ? { Authorization: "Bearer " + adminKey() } : {},
    credentials: "omit",
  });
  const url = URL.createObjectURL(await response.blob());
  const link = h("a", { href: url, download: `usage-by-${groupBy}.csv` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function secretBox(created, note) {
  const done = h("button", { type: "button", text: "I have copied it" });
  const box = h(
    "div",
    { class: "secret", id: "new-key", role: "status" },
    h("p", {}, note, " It is shown only this once: copy it now."),
    h("code", { id: "new-key-secret", text: created.key }),
    " ",
    done,
  );
  done.addEventListener("click", () => box.remove());
  return box;
}

async function keysView(view) {
  const [keys, projects] = await Promise.all([api.get("/keys"), api.get("/projects")]);
  const name = h("input", { id: "key-name", required: true, maxlength: 100 });
  const project = h("select", { id: "key-project" }, projects.data.map((p) => h("option", { value: p.id, text: `${p.name} (${p.id})` })));
  const scopes = h("select", { id: "key-scopes" }, h("option", { value: "inference", text: "inference" }), h("option", { value: "inference,admin", text: "inference + admin" }));
  const slot = h("div");
  const form = h(
    "form",
    {
      id: "new-key-form",
      on: {
        submit: async (e) => {
          e.preventDefault();
          try {
            const created = await api.post("/keys", { name: name.value, project_id: project.value, scopes: scopes.value.split(",") });
            await keysView(view);
            $("#new-key-slot", view).append(secretBox(created, `Key ${created.prefix} created.`));
          } catch (error) {
            clear(slot).append(failure(error));
          }
        },
      },
    },
    h("label", {}, "Name", name),
    h("label", {}, "Project", project),
    h("label", {}, "Scopes", scopes),
    h("button", { type: "submit", text: "Create key" }),
  );
  const actions = (k) => {
    if (k.revoked_at) return h("span", { class: "muted", text: "revoked " + when(k.revoked_at) });
    const rotate = h("button", { type: "button", text: "Rotate" });
    rotate.addEventListener("click", async () => {
      const created = await api.post("/keys/" + encodeURIComponent(k.id) + "/rotate");
      await keysView(view);
      $("#new-key-slot", view).append(secretBox(created, `Key ${k.prefix} replaced by ${created.prefix}.`));
    });
    return h("span", {}, rotate, " ", twoStep("Revoke", async () => { await api.post("/keys/" + encodeURIComponent(k.id) + "/revoke"); await keysView(view); }));
  };
  clear(view).append(
    h("h2", { text: "API keys" }),
    form,
    slot,
    h("div", { id: "new-key-slot" }),
    table(
      [
        ["Name", (k) => k.name],
        ["Prefix", (k) => h("code", { text: k.prefix })],
        ["Project", (k) => k.project_id],
        ["Scopes", (k) => k.scopes.join(", ")],
        ["Created", (k) => when(k.created_at)],
        ["Last used", (k) => when(k.last_used_at)],
        ["", actions],
      ],
      keys.data,
      { id: "keys" },
    ),
  );
}

async function projectsView(view) {
  const projects = await api.get("/projects");
  const limit = (l) => [l.rpm && `${l.rpm} rpm`, l.tpm && `${l.tpm} tpm`, l.concurrency && `${l.concurrency} at once`].filter(Boolean).join(", ") || "none";
  clear(view).append(
    h("h2", { text: "Projects" }),
    table(
      [
        ["Name", (p) => p.name],
        ["Id", (p) => p.id],
        ["Monthly budget", (p) => (p.monthly_budget_micros === null ? "unlimited" : money(p.monthly_budget_micros, p.currency)), "num"],
        ["Limits", (p) => limit(p.limits)],
        ["Created", (p) => when(p.created_at)],
      ],
      projects.data,
      { id: "projects" },
    ),
  );
}

async function usersView(view) {
  const users = await api.get("/chat/users");
  clear(view).append(
    h("h2", { text: "Chat users" }),
    table(
      [["Email", (u) => u.email], ["Project", (u) => u.project_id], ["Language", (u) => u.language || "–"], ["Created", (u) => when(u.created_at)], ["Disabled", (u) => when(u.disabled_at)]],
      users.data,
      { id: "users" },
    ),
  );
}

async function catalogView(view) {
  const models = await api.get("/models");
  const speed = (m) => (m.measured ? `${m.measured.decode_tokens_per_second ?? "–"} tok/s decode, ${m.measured.prefill_tokens_per_second} prefill (${when(m.measured.measured_at)})` : m.tokens_per_second ? `${m.tokens_per_second} tok/s` : "–");
  const quality = (m) =>
    (m.evaluations || []).map((e) => `${e.task} ${e.metric} ${Number(e.score).toPrecision(3)} (${e.items} items, ${when(e.measured_at).slice(0, 10)})`).join("; ") ||
    Object.entries(m.quality_scores || {}).map(([k, v]) => `${k}: ${v}`).join(", ") || "–";
  clear(view).append(
    h("h2", { text: "Catalog" }),
    table(
      [["Model", (m) => m.id], ["Name", (m) => m.display_name], ["Licence", (m) => m.license], ["Quantization", (m) => m.quantization || "–"], ["Context", (m) => String(m.context_length), "num"], ["Speed", speed], ["Quality", quality], ["Deployed as", (m) => (m.deployments || []).join(", ")]],
      models.data,
      { id: "catalog" },
    ),
  );
}

async function auditView(view) {
  const [entries, verdict] = await Promise.all([api.get("/audit" + qs({ limit: 100 })), api.get("/audit/verify")]);
  clear(view).append(
    h("h2", { text: "Audit log" }),
    h("p", { id: "audit-verdict", class: verdict.ok ? "" : "error" }, verdict.ok ? "Hash chain verified: intact." : `Hash chain BROKEN at entry ${verdict.first_bad_seq}.`),
    table(
      [["#", (e) => String(e.seq), "num"], ["At", (e) => when(e.at)], ["Actor", (e) => e.actor], ["Action", (e) => e.action], ["Target", (e) => e.target || ""], ["Details", (e) => JSON.stringify(e.details)]],
      entries.data,
      { id: "audit" },
    ),
  );
}

// ---------------------------------------------------------------- boot

function boot() {
  const tabs = $("#tabs");
  for (const [name, [label]] of Object.entries(TABS)) {
    tabs.append(h("button", { type: "button", dataset: { tab: name }, text: label, on: { click: () => show(name) } }));
  }
  $("#logout").addEventListener("click", () => { setAdminKey(""); loginView(""); });
  start();
}

boot();
