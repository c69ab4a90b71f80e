// The source panel (a cited passage) and the settings dialog.
import { api } from "./api.js";
import { $, clear, h } from "./dom.js";
import { errorText } from "./errors.js";
import { LANGUAGES, t } from "./i18n.js";

export function openSource(source) {
  const panel = $("#source-panel");
  clear(panel);
  const close = h("button", { type: "button", class: "icon-button", "aria-label": t("source.close"), on: { click: closeSource } }, "×");
  panel.append(
    h("div", { class: "panel-head" }, h("h2", { id: "source-title" }, `${t("source.title")} [${source.n}]`), close),
    h("p", { class: "source-doc" }, source.document),
    h("blockquote", { class: "source-text" }, source.text),
  );
  panel.hidden = false;
  panel.dataset.open = "true";
  close.focus();
}

export function closeSource() {
  const panel = $("#source-panel");
  if (!panel || panel.hidden) return false;
  panel.hidden = true;
  delete panel.dataset.open;
  return true;
}

export function applyTheme(theme) {
  if (theme === "dark" || theme === "light") document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
}

export function currentTheme() {
  return localStorage.getItem("alize-theme") || "system";
}

export function openSettings(app) {
  const dialog = $("#settings");
  clear(dialog);
  const status = h("p", { class: "status", role: "status" });
  const language = h(
    "select",
    { id: "setting-language", on: { change: () => app.changeLanguage(language.value || null) } },
    h("option", { value: "" }, t("settings.languageAuto")),
    Object.entries(LANGUAGES).map(([code, name]) => h("option", { value: code, selected: app.me.language === code }, name)),
  );
  const theme = h(
    "select",
    { id: "setting-theme", on: { change: () => { localStorage.setItem("alize-theme", theme.value); applyTheme(theme.value); } } },
    ["system", "light", "dark"].map((v) =>
      h("option", { value: v, selected: currentTheme() === v }, t(`settings.theme${v[0].toUpperCase()}${v.slice(1)}`)),
    ),
  );
  const conversation = app.current?.conversation;
  const instructions = h("textarea", { id: "setting-instructions", rows: 4 });
  instructions.value = conversation?.instructions || "";
  const saveInstructions = h("button", {
    type: "button",
    on: {
      click: async () => {
        try {
          await app.ensureConversation();
          await api("PATCH", `/conversations/${app.current.conversation.id}`, { instructions: instructions.value });
          app.current.conversation.instructions = instructions.value;
          status.textContent = t("settings.saved");
        } catch (err) {
          status.textContent = errorText(err);
        }
      },
    },
  }, t("settings.saveInstructions"));
  const agentName = h("input", { id: "agent-name", type: "text", maxlength: 200, placeholder: t("settings.agentName") });
  const agentList = h("ul", { class: "agents" });
  const renderAgents = async () => {
    clear(agentList);
    const { data } = await api("GET", "/agents");
    if (!data.length) agentList.append(h("li", { class: "muted" }, t("settings.noAgents")));
    for (const agent of data) {
      agentList.append(
        h("li", {},
          h("span", { class: "agent-name" }, `${agent.name} · ${agent.model}`),
          h("button", { type: "button", on: { click: async () => { await app.useAgent(agent); instructions.value = agent.instructions; status.textContent = t("settings.saved"); } } }, t("settings.useAgent")),
          h("button", { type: "button", on: { click: async () => { await api("DELETE", `/agents/${agent.id}`); await renderAgents(); } } }, t("settings.deleteAgent")),
        ),
      );
    }
  };
  const saveAgent = h("button", {
    type: "button",
    on: {
      click: async () => {
        if (!agentName.value.trim()) return agentName.focus();
        try {
          await api("POST", "/agents", { name: agentName.value, instructions: instructions.value, model: app.model() });
          agentName.value = "";
          await renderAgents();
        } catch (err) {
          status.textContent = errorText(err);
        }
      },
    },
  }, t("settings.saveAgent"));
  const exports = conversation
    ? h("p", { class: "row" },
        h("a", { href: `/chat/api/conversations/${encodeURIComponent(conversation.id)}/export?format=markdown`, download: "" }, t("settings.exportMarkdown")),
        h("a", { href: `/chat/api/conversations/${encodeURIComponent(conversation.id)}/export?format=json`, download: "" }, t("settings.exportJson")),
      )
    : null;
  dialog.append(
    h("form", { method: "dialog", class: "settings-form" },
      h("div", { class: "panel-head" }, h("h2", {}, t("settings.title")),
        h("button", { type: "submit", class: "icon-button", "aria-label": t("settings.close") }, "×")),
      h("label", { for: "setting-language" }, t("settings.language")), language,
      h("label", { for: "setting-theme" }, t("settings.theme")), theme,
      h("label", { for: "setting-instructions" }, t("settings.instructions")),
      h("p", { class: "help" }, t("settings.instructionsHelp")), instructions, h("p", { class: "row" }, saveInstructions),
      h("h3", {}, t("settings.agents")), agentList, h("p", { class: "row" }, agentName, saveAgent),
      exports ? h("h3", {}, t("settings.export")) : null, exports,
      h("h3", {}, t("settings.myData")),
      h("p", { class: "row" }, h("a", { id: "export-my-data", href: "/chat/api/me/export", download: "" }, t("settings.exportMyData"))),
      status,
    ),
  );
  renderAgents().catch(() => {});
  dialog.showModal();
}
