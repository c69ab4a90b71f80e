// The conversation: messages (Markdown), the composer, streaming replies, stop, edit,
// regenerate, documents and citations.
import { api, stream } from "./api.js";
import { $, clear, h } from "./dom.js";
import { errorText } from "./errors.js";
import { language, t } from "./i18n.js";
import { renderMarkdown } from "./markdown.js";
import { openSource } from "./panels.js";

function body(message, citations) {
  const node = h("div", { class: "content" });
  if (message.role === "assistant") {
    node.append(renderMarkdown(message.content, { citations, onCite: openSource, t }));
  } else {
    node.textContent = message.content; // the user's own text is shown as typed
  }
  return node;
}

function sources(citations) {
  if (!citations?.length) return null;
  return h("div", { class: "sources" },
    h("span", { class: "muted" }, `${t("chat.sources")}:`),
    citations.map((c) => h("button", { type: "button", class: "cite source-chip", on: { click: () => openSource(c) } }, `[${c.n}] ${c.document}`)),
  );
}

export function messageView(app, message, { last = false } = {}) {
  const actions = h("div", { class: "actions" });
  const copy = h("button", { type: "button", class: "small", on: { click: async () => {
    try { await navigator.clipboard.writeText(message.content); } catch { /* refused */ }
    copy.textContent = t("chat.copied");
    setTimeout(() => (copy.textContent = t("chat.copy")), 1500);
  } } }, t("chat.copy"));
  actions.append(copy);
  if (message.role === "user" && message.id) {
    actions.append(h("button", { type: "button", class: "small", on: { click: () => editMessage(app, article, message) } }, t("chat.edit")));
  }
  if (message.role === "assistant" && last && message.id) {
    actions.append(h("button", { type: "button", class: "small regenerate", on: { click: () => regenerate(app) } }, t("chat.regenerate")));
  }
  const article = h("article", { class: `message ${message.role}`, dataset: { id: message.id || "", status: message.status || "" } },
    h("div", { class: "who" }, message.role === "user" ? t("chat.you") : `${t("chat.assistant")}${message.model ? ` · ${message.model}` : ""}`,
      message.status === "stopped" ? h("span", { class: "badge" }, t("chat.stopped")) : null),
    body(message, message.citations),
    sources(message.citations),
    actions,
  );
  return article;
}

export function renderConversation(app) {
  const list = $("#messages");
  clear(list);
  const detail = app.current;
  if (app.notFound) {
    list.append(h("p", { class: "empty error", role: "alert" }, t("chat.notFound")));
  } else if (!detail || !detail.messages.length) {
    list.append(h("p", { class: "empty" }, t("chat.empty")));
  } else {
    const lastIndex = detail.messages.length - 1;
    detail.messages.forEach((m, i) => list.append(messageView(app, m, { last: i === lastIndex })));
  }
  renderDocuments(app);
  list.scrollTop = list.scrollHeight;
}

function renderDocuments(app) {
  const box = $("#documents");
  clear(box);
  for (const doc of app.current?.documents || []) {
    box.append(h("span", { class: "doc-chip" }, doc.name,
      h("button", { type: "button", class: "icon-button", "aria-label": `${t("chat.removeDocument")} ${doc.name}`, on: { click: async () => {
        await api("DELETE", `/conversations/${app.current.conversation.id}/documents/${doc.id}`);
        await app.reload();
      } } }, "×")));
  }
}

function editMessage(app, article, message) {
  if (app.streaming) return;
  const area = h("textarea", { class: "edit-area", rows: 3 });
  area.value = message.content;
  const save = h("button", { type: "button", on: { click: () => send(app, area.value, message.id) } }, t("chat.saveEdit"));
  const cancel = h("button", { type: "button", on: { click: () => renderConversation(app) } }, t("sidebar.cancel"));
  area.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); save.click(); }
    if (e.key === "Escape") { e.preventDefault(); e.stopPropagation(); cancel.click(); }
  });
  const content = article.querySelector(".content");
  content.replaceWith(h("div", { class: "content editing" }, area, h("p", { class: "row" }, save, cancel)));
  area.focus();
}

function setStreaming(app, on) {
  app.streaming = on ? app.streaming : null;
  $("#send").hidden = on;
  $("#stop").hidden = !on;
  document.body.classList.toggle("is-streaming", on);
}

async function runStream(app, path, payload, pending) {
  const controller = new AbortController();
  app.streaming = { controller };
  setStreaming(app, true);
  const reply = { role: "assistant", content: "", citations: [], model: payload.model };
  const article = h("article", { class: "message assistant streaming", "aria-busy": "true" },
    h("div", { class: "who" }, `${t("chat.assistant")} · ${payload.model || ""}`),
    h("div", { class: "content" }, h("p", { class: "muted" }, t("chat.thinking"))));
  const list = $("#messages");
  $(".empty", list)?.remove();
  if (pending) list.append(pending);
  list.append(article);
  list.scrollTop = list.scrollHeight;
  let failed = null;
  const paint = () => {
    const content = h("div", { class: "content" }, renderMarkdown(reply.content, { citations: reply.citations, onCite: openSource, t }));
    article.querySelector(".content").replaceWith(content);
    list.scrollTop = list.scrollHeight;
  };
  try {
    await stream(path, payload, (event) => {
      if (event.type === "status" && event.status === "loading") {
        article.querySelector(".content").replaceWith(h("div", { class: "content" }, h("p", { class: "muted" }, t("chat.loadingModel"))));
      } else if (event.type === "sources") {
        reply.citations = event.citations;
      } else if (event.type === "delta") {
        reply.content += event.text;
        paint();
      } else if (event.type === "error") {
        failed = event.error;
      }
    }, controller.signal);
  } catch (err) {
    if (err.name !== "AbortError") failed = err.code ? err : { message: String(err), code: "network" };
  } finally {
    const stopped = controller.signal.aborted;
    setStreaming(app, false);
    article.removeAttribute("aria-busy");
    article.classList.remove("streaming");
    if (stopped) {
      article.dataset.status = "stopped";
      article.querySelector(".who").append(h("span", { class: "badge" }, t("chat.stopped")));
    }
    if (failed) {
      await app.reload();
      $("#messages").append(h("p", { class: "error", role: "alert" }, errorText(failed)));
    } else if (stopped) {
      setTimeout(() => { if (!app.streaming) app.reload(); }, 1200); // the server saves the partial reply
    } else {
      await app.reload();
    }
    $("#prompt")?.focus();
  }
}

export async function send(app, text, editId = null) {
  const content = text.trim();
  if (!content || app.streaming) return;
  await app.ensureConversation();
  const id = app.current.conversation.id;
  const pending = editId ? null : messageView(app, { role: "user", content });
  if (editId) {
    const detail = app.current;
    const index = detail.messages.findIndex((m) => m.id === editId);
    detail.messages = detail.messages.slice(0, Math.max(0, index));
    renderConversation(app);
    $("#messages").append(messageView(app, { role: "user", content }));
  }
  $("#prompt").value = "";
  await runStream(app, `/conversations/${id}/messages`, { content, model: app.model(), language: language(), edit_message_id: editId }, pending);
  app.refreshList();
}

export async function regenerate(app) {
  if (app.streaming || !app.current) return;
  const detail = app.current;
  const lastUser = detail.messages.map((m) => m.role).lastIndexOf("user");
  detail.messages = detail.messages.slice(0, lastUser + 1);
  renderConversation(app);
  await runStream(app, `/conversations/${detail.conversation.id}/regenerate`, { model: app.model(), language: language() }, null);
}

export function stop(app) {
  if (!app.streaming) return false;
  app.streaming.controller.abort();
  return true;
}

export async function upload(app, file) {
  const status = $("#composer-status");
  status.textContent = t("chat.uploading");
  try {
    await app.ensureConversation();
    const form = new FormData();
    form.append("file", file);
    await api("POST", `/conversations/${app.current.conversation.id}/documents`, form);
    status.textContent = "";
    await app.reload();
  } catch (err) {
    status.textContent = errorText(err);
  }
}
