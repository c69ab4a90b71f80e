// A small Markdown renderer that builds DOM nodes directly (createElement + textContent),
// never HTML strings: raw HTML in a message stays visible text, links are kept only for
// http(s) and mailto URLs, and nothing can carry an event handler or a script.
// Supported: paragraphs, headings, fenced code (highlighted, with a copy button), inline code,
// bold, italic, strikethrough, links, autolinks, lists, blockquotes, tables, rules, and
// citations [n] (buttons, when the message has sources).

import { highlight } from "./highlight.js";

const SAFE_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);

export function safeUrl(raw) {
  try {
    const url = new URL(raw);
    return SAFE_PROTOCOLS.has(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const INLINE = new RegExp(
  [
    "(`+)([\\s\\S]*?[^`])\\1(?!`)", // 1,2 code
    "\\*\\*([\\s\\S]+?)\\*\\*", // 3 strong
    "__([\\s\\S]+?)__", // 4 strong
    "~~([\\s\\S]+?)~~", // 5 del
    "\\*([^*\\s](?:[^*]*[^*\\s])?)\\*", // 6 em
    "(?<![\\w])_([^_\\s](?:[^_]*[^_\\s])?)_(?![\\w])", // 7 em
    "\\[([^\\]\\n]+)\\]\\(([^)\\s]+)(?:\\s+\"[^\"]*\")?\\)", // 8,9 link
    "\\[(\\d{1,2})\\]", // 10 citation
    "(https?:\\/\\/[^\\s<>()]+[^\\s<>().,;:!?'\"])", // 11 autolink
  ].join("|"),
  "g",
);

function inline(text, ctx) {
  const fragment = document.createDocumentFragment();
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) fragment.append(document.createTextNode(text.slice(last, m.index)));
    last = m.index + m[0].length;
    if (m[2] !== undefined) {
      fragment.append(el("code", "inline-code", m[2]));
    } else if (m[3] !== undefined || m[4] !== undefined) {
      const strong = el("strong");
      strong.append(inline(m[3] ?? m[4], ctx));
      fragment.append(strong);
    } else if (m[5] !== undefined) {
      const del = el("del");
      del.append(inline(m[5], ctx));
      fragment.append(del);
    } else if (m[6] !== undefined || m[7] !== undefined) {
      const em = el("em");
      em.append(inline(m[6] ?? m[7], ctx));
      fragment.append(em);
    } else if (m[8] !== undefined) {
      const href = safeUrl(m[9]);
      if (href) {
        const a = el("a");
        a.href = href;
        a.target = "_blank";
        a.rel = "noopener noreferrer nofollow";
        a.append(inline(m[8], ctx));
        fragment.append(a);
      } else {
        fragment.append(document.createTextNode(m[0]));
      }
    } else if (m[10] !== undefined) {
      const n = Number(m[10]);
      const source = ctx.citations?.find((c) => c.n === n);
      if (source && ctx.onCite) {
        const button = el("button", "cite", `[${n}]`);
        button.type = "button";
        button.title = source.document;
        button.addEventListener("click", () => ctx.onCite(source));
        fragment.append(button);
      } else {
        fragment.append(document.createTextNode(m[0]));
      }
    } else if (m[11] !== undefined) {
      const href = safeUrl(m[11]);
      const a = el("a", null, m[11]);
      if (href) {
        a.href = href;
        a.target = "_blank";
        a.rel = "noopener noreferrer nofollow";
      }
      fragment.append(href ? a : document.createTextNode(m[11]));
    }
  }
  if (last < text.length) fragment.append(document.createTextNode(text.slice(last)));
  return fragment;
}

function codeBlock(code, lang, ctx) {
  const wrap = el("div", "code-block");
  const bar = el("div", "code-bar");
  bar.append(el("span", "code-lang", lang || "text"));
  const copy = el("button", "copy-code", ctx.t ? ctx.t("chat.copy") : "Copy");
  copy.type = "button";
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(code);
    } catch {
      /* clipboard refused: nothing to do */
    }
    copy.textContent = ctx.t ? ctx.t("chat.copied") : "Copied";
    setTimeout(() => (copy.textContent = ctx.t ? ctx.t("chat.copy") : "Copy"), 1500);
  });
  bar.append(copy);
  const pre = el("pre");
  const codeEl = el("code");
  if (lang) codeEl.dataset.lang = lang;
  codeEl.append(highlight(code, lang));
  pre.append(codeEl);
  wrap.append(bar, pre);
  return wrap;
}

const FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_SEP = /^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$/;

function cells(line) {
  let text = line.trim();
  if (text.startsWith("|")) text = text.slice(1);
  if (text.endsWith("|") && !text.endsWith("\\|")) text = text.slice(0, -1);
  return text.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|"));
}

function startsBlock(line, next) {
  return (
    FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line) ||
    (line.includes("|") && next !== undefined && TABLE_SEP.test(next))
  );
}

function blocks(lines, ctx) {
  const fragment = document.createDocumentFragment();
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i++;
      continue;
    }
    let m;
    if ((m = line.match(FENCE))) {
      const fence = m[1];
      const body = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(fence)) body.push(lines[i++]);
      i++; // closing fence (absent while a reply is still streaming)
      fragment.append(codeBlock(body.join("\n"), m[2], ctx));
    } else if ((m = line.match(HEADING))) {
      const heading = el(`h${Math.min(6, m[1].length + 2)}`);
      heading.append(inline(m[2], ctx));
      fragment.append(heading);
      i++;
    } else if (RULE.test(line)) {
      fragment.append(el("hr"));
      i++;
    } else if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && (m = lines[i].match(QUOTE))) {
        inner.push(m[1]);
        i++;
      }
      const quote = el("blockquote");
      quote.append(blocks(inner, ctx));
      fragment.append(quote);
    } else if (line.includes("|") && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1])) {
      const table = el("table");
      const head = el("thead");
      const headRow = el("tr");
      for (const cell of cells(line)) {
        const th = el("th");
        th.append(inline(cell, ctx));
        headRow.append(th);
      }
      head.append(headRow);
      table.append(head);
      const body = el("tbody");
      i += 2;
      while (i < lines.length && lines[i].includes("|") && lines[i].trim()) {
        const row = el("tr");
        for (const cell of cells(lines[i])) {
          const td = el("td");
          td.append(inline(cell, ctx));
          row.append(td);
        }
        body.append(row);
        i++;
      }
      table.append(body);
      const scroller = el("div", "table-wrap");
      scroller.append(table);
      fragment.append(scroller);
    } else if ((m = line.match(ITEM))) {
      const ordered = /\d/.test(m[2]);
      const list = el(ordered ? "ol" : "ul");
      if (ordered && parseInt(m[2], 10) !== 1) list.start = parseInt(m[2], 10);
      const indent = m[1].length;
      while (i < lines.length && (m = lines[i].match(ITEM)) && m[1].length <= indent + 1) {
        const item = [m[3]];
        i++;
        while (i < lines.length && lines[i].trim() && !ITEM.test(lines[i]) && /^\s+/.test(lines[i])) {
          item.push(lines[i].trim());
          i++;
        }
        const nested = [];
        while (i < lines.length && (m = lines[i].match(ITEM)) && m[1].length > indent + 1) {
          nested.push(lines[i]);
          i++;
        }
        const li = el("li");
        li.append(inline(item.join(" "), ctx));
        if (nested.length) li.append(blocks(nested.map((l) => l.slice(indent + 2)), ctx));
        list.append(li);
        while (i < lines.length && !lines[i].trim() && i + 1 < lines.length && ITEM.test(lines[i + 1])) i++;
      }
      fragment.append(list);
    } else {
      const paragraph = [line];
      i++;
      while (i < lines.length && lines[i].trim() && !startsBlock(lines[i], lines[i + 1])) paragraph.push(lines[i++]);
      const p = el("p");
      paragraph.forEach((text, index) => {
        if (index) p.append(el("br"));
        p.append(inline(text, ctx));
      });
      fragment.append(p);
    }
  }
  return fragment;
}

// ctx: { citations: [{n, document, text}], onCite(source), t(key) }
export function renderMarkdown(source, ctx = {}) {
  return blocks(String(source ?? "").replace(/\r\n?/g, "\n").split("\n"), ctx);
}
