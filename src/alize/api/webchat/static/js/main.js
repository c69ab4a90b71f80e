// Boot: who is logged in, the layout, the conversation list, routing (/ and /c/<id>) and
// keyboard shortcuts (Enter sends, Shift+Enter new line, Esc stops a reply or closes a panel).
import { api, ApiError, setCsrf } from "./api.js";
import { renderConversation, send, stop, upload } from "./chat.js";
import { $, clear, h } from "./dom.js";
import { errorText } from "./errors.js";
import { browserLanguage, setLanguage, t } from "./i18n.js";
import { applyTheme, closeSource, currentTheme, openSettings } from "./panels.js";

const app = {
  me: null,
  models: [],
  defaultModel: null,
  conversations: [],
  current: null,
  notFound: false,
  streaming: null,
  search: "",

  model() {
    return $("#model")?.value || this.current?.conversation.model || this.defaultModel;
  },

  async ensureConversation() {
    if (this.current) return this.current;
    const created = await api("POST", "/conversations", { model: this.model() });
    this.current = { conversation: created, messages: [], documents: [] };
    this.notFound = false;
    history.pushState({}, "", `/c/${encodeURIComponent(created.id)}`);
    await this.refreshList();
    return this.current;
  },

  async reload() {
    if (!this.current) return;
    try {
      this.current = await api("GET", `/conversations/${encodeURIComponent(this.current.conversation.id)}`);
    } catch (err) {
      if (err.status === 404) this.notFound = true;
    }
    renderConversation(this);
  },

  async refreshList() {
    const query = this.search ? `?q=${encodeURIComponent(this.search)}` : "";
    const { data } = await api("GET", `/conversations${query}`);
    this.conversations = data;
    renderSidebar();
  },

  async open(id) {
    this.notFound = false;
    try {
      this.current = await api("GET", `/conversations/${encodeURIComponent(id)}`);
    } catch (err) {
      this.current = null;
      this.notFound = err.status === 404;
      if (!this.notFound) throw err;
    }
    syncModel();
    renderConversation(this);
    renderSidebar();
    document.body.classList.remove("sidebar-open");
  },

  async useAgent(agent) {
    await this.ensureConversation();
    const id = this.current.conversation.id;
    this.current.conversation = await api("PATCH", `/conversations/${id}`, { instructions: agent.instructions, model: agent.model });
    syncModel();
  },

  async changeLanguage(code) {
    this.me = await api("PATCH", "/me", { language: code });
    await setLanguage(code || browserLanguage());
    renderLayout();
    renderConversation(this);
    await this.refreshList();
    openSettings(this);
  },
};

function syncModel() {
  const select = $("#model");
  if (select && app.current) select.value = app.current.conversation.model;
}

function route() {
  const match = location.pathname.match(/^\/c\/([^/]+)$/);
  return match ? decodeURIComponent(match[1]) : null;
}

async function navigate(id, push = true) {
  if (app.streaming) stop(app);
  if (id) {
    if (push) history.pushState({}, "", `/c/${encodeURIComponent(id)}`);
    await app.open(id);
  } else {
    if (push) history.pushState({}, "", "/");
    app.current = null;
    app.notFound = false;
    renderConversation(app);
    renderSidebar();
    $("#prompt")?.focus();
  }
}

function conversationItem(c) {
  const active = app.current?.conversation.id === c.id;
  const item = h("li", { class: active ? "active" : "" });
  const title = c.title || t("sidebar.new");
  const open = h("button", { type: "button", class: "conv-title", "aria-current": active ? "page" : null, on: { click: () => navigate(c.id) } }, title);
  const rename = h("button", { type: "button", class: "small", "aria-label": `${t("sidebar.rename")}: ${title}`, on: { click: () => {
    const input = h("input", { type: "text", class: "rename", maxlength: 200, "aria-label": t("sidebar.rename") });
    input.value = c.title;
    const save = async () => {
      if (input.value.trim()) await api("PATCH", `/conversations/${c.id}`, { title: input.value });
      await app.refreshList();
      if (app.current?.conversation.id === c.id) await app.reload();
    };
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") { e.preventDefault(); save(); }
      if (e.key === "Escape") { e.preventDefault(); e.stopPropagation(); renderSidebar(); }
    });
    clear(item).append(input, h("button", { type: "button", class: "small", on: { click: save } }, t("sidebar.save")));
    input.focus();
  } } }, "✎");
  const remove = h("button", { type: "button", class: "small danger", "aria-label": `${t("sidebar.delete")}: ${title}`, on: { click: async () => {
    if (remove.dataset.confirm !== "yes") {
      remove.dataset.confirm = "yes";
      remove.textContent = t("sidebar.confirmDelete");
      return;
    }
    await api("DELETE", `/conversations/${c.id}`);
    if (app.current?.conversation.id === c.id) await navigate(null);
    await app.refreshList();
  } } }, "×");
  item.append(open, rename, remove);
  return item;
}

function renderSidebar() {
  const list = $("#conversations");
  if (!list) return;
  clear(list);
  if (!app.conversations.length) list.append(h("li", { class: "muted" }, t("sidebar.empty")));
  for (const c of app.conversations) list.append(conversationItem(c));
}

function renderLayout() {
  const root = $("#app");
  clear(root);
  document.title = t("app.title");
  let searchTimer = null;
  const search = h("input", { id: "search", type: "search", placeholder: t("sidebar.search"), "aria-label": t("sidebar.search"), on: { input: () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => { app.search = search.value.trim(); app.refreshList(); }, 200);
  } } });
  search.value = app.search;
  const prompt = h("textarea", { id: "prompt", rows: 2, placeholder: t("chat.placeholder"), "aria-label": t("chat.placeholder") });
  prompt.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send(app, prompt.value);
    }
  });
  const file = h("input", { id: "file", type: "file", accept: ".txt,.md,.markdown,.pdf", hidden: true, on: { change: () => {
    if (file.files[0]) upload(app, file.files[0]);
    file.value = "";
  } } });
  const model = h("select", { id: "model", "aria-label": t("chat.model"), on: { change: async () => {
    if (app.current) app.current.conversation = await api("PATCH", `/conversations/${app.current.conversation.id}`, { model: model.value });
  } } }, app.models.map((m) => h("option", { value: m }, m)));
  model.value = app.current?.conversation.model || app.defaultModel;
  root.append(
    h("aside", { id: "sidebar", "aria-label": t("menu") },
      h("button", { type: "button", id: "new-chat", class: "primary", on: { click: () => navigate(null) } }, `+ ${t("sidebar.new")}`),
      search,
      h("nav", {}, h("ul", { id: "conversations" })),
      h("div", { class: "sidebar-foot" },
        h("span", { class: "muted user-email" }, app.me.email),
        h("button", { type: "button", id: "logout", on: { click: async () => { await api("POST", "/logout"); location.assign("/"); } } }, t("logout"))),
    ),
    h("main", { id: "main" },
      h("header", { class: "topbar" },
        h("button", { type: "button", id: "menu-toggle", class: "icon-button", "aria-label": t("menu"), on: { click: () => document.body.classList.toggle("sidebar-open") } }, "☰"),
        h("label", { for: "model", class: "visually-hidden" }, t("chat.model")), model,
        h("span", { class: "spacer" }),
        h("button", { type: "button", id: "theme-toggle", class: "icon-button", "aria-label": t("theme.toggle"), on: { click: () => {
          const dark = document.documentElement.dataset.theme === "dark" || (!document.documentElement.dataset.theme && matchMedia("(prefers-color-scheme: dark)").matches);
          const next = dark ? "light" : "dark";
          localStorage.setItem("alize-theme", next);
          applyTheme(next);
        } } }, "◐"),
        h("button", { type: "button", id: "settings-open", class: "icon-button", "aria-label": t("settings.open"), on: { click: () => openSettings(app) } }, "⚙"),
      ),
      h("section", { id: "messages", "aria-live": "polite", tabindex: "-1" }),
      h("div", { id: "composer" },
        h("div", { id: "documents" }),
        h("div", { class: "composer-row" },
          h("button", { type: "button", id: "attach", class: "icon-button", "aria-label": t("chat.attach"), title: t("chat.attach"), on: { click: () => file.click() } }, "+"),
          file, prompt,
          h("button", { type: "button", id: "send", class: "primary", on: { click: () => send(app, prompt.value) } }, t("chat.send")),
          h("button", { type: "button", id: "stop", class: "danger", hidden: true, on: { click: () => stop(app) } }, t("chat.stop")),
        ),
        h("p", { id: "composer-status", class: "status", role: "status" }),
        h("p", { id: "ai-notice", class: "ai-notice" }, t("ai.notice")),
      ),
    ),
    h("aside", { id: "source-panel", role: "dialog", "aria-labelledby": "source-title", hidden: true }),
    h("dialog", { id: "settings" }),
  );
}

function renderLogin(message = "") {
  const root = $("#app");
  clear(root);
  const email = h("input", { id: "email", type: "email", autocomplete: "username", required: true });
  const password = h("input", { id: "password", type: "password", autocomplete: "current-password", required: true });
  const error = h("p", { class: "error", role: "alert" }, message);
  const form = h("form", { class: "login", on: { submit: async (e) => {
    e.preventDefault();
    try {
      const me = await api("POST", "/login", { email: email.value, password: password.value });
      await start(me);
    } catch (err) {
      error.textContent = err.code === "invalid_credentials" ? t("login.failed") : errorText(err);
    }
  } } },
    h("h1", {}, t("app.title")),
    h("label", { for: "email" }, t("login.email")), email,
    h("label", { for: "password" }, t("login.password")), password,
    h("button", { type: "submit", class: "primary" }, t("login.submit")),
    error,
    h("p", { id: "ai-notice", class: "ai-notice" }, t("ai.notice")),
  );
  root.append(h("div", { class: "login-wrap" }, form));
  email.focus();
}

async function start(me) {
  app.me = me;
  setCsrf(me.csrf_token);
  await setLanguage(me.language || browserLanguage());
  const models = await api("GET", "/models");
  app.models = models.models;
  app.defaultModel = models.default;
  renderLayout();
  await app.refreshList();
  const id = route();
  if (id) await app.open(id);
  else renderConversation(app);
  $("#prompt")?.focus();
  document.body.dataset.ready = "true";
}

document.addEventListener("keydown", (e) => {
  if (e.key !== "Escape") return;
  if (stop(app) || closeSource()) e.preventDefault();
});
window.addEventListener("popstate", () => {
  if (!app.me) return;
  navigate(route(), false);
});

async function boot() {
  applyTheme(currentTheme());
  await setLanguage(browserLanguage());
  try {
    await start(await api("GET", "/me"));
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) renderLogin();
    else renderLogin(errorText(err));
    document.body.dataset.ready = "true";
  }
}

boot();
