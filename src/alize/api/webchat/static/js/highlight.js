// A tiny syntax highlighter: comments, strings, numbers and keywords for a few languages.
// It only ever creates <span class="tok-..."> elements holding text nodes.

const KEYWORDS = {
  js: "async await break case catch class const continue default delete do else export extends false finally for from function if import in instanceof let new null of return static super switch this throw true try typeof undefined var void while yield",
  python: "and as assert async await break class continue def del elif else except False finally for from global if import in is lambda None nonlocal not or pass raise return True try while with yield self",
  bash: "if then else elif fi for while do done case esac function in return export local echo exit set",
  c: "auto bool break case char class const continue default do double else enum extern false float for fn func go if impl import int let long match mut namespace new nil null package private protected public pub return self short signed sizeof static struct switch template this true try typedef type union unsigned use var void volatile while",
  sql: "select from where insert into values update set delete create table drop alter index join left right inner outer on group by order having limit offset as and or not null is in like distinct union all primary key foreign references",
};

const ALIASES = {
  javascript: "js", ts: "js", typescript: "js", jsx: "js", tsx: "js", json: "js", mjs: "js",
  py: "python", python3: "python", sh: "bash", shell: "bash", zsh: "bash", console: "bash",
  cpp: "c", "c++": "c", java: "c", go: "c", rust: "c", rs: "c", csharp: "c", cs: "c", kotlin: "c", swift: "c",
  postgres: "sql", postgresql: "sql", sqlite: "sql", mysql: "sql",
};

const COMMENTS = {
  js: String.raw`\/\/[^\n]*|\/\*[\s\S]*?\*\/`,
  c: String.raw`\/\/[^\n]*|\/\*[\s\S]*?\*\/`,
  python: String.raw`#[^\n]*`,
  bash: String.raw`#[^\n]*`,
  sql: String.raw`--[^\n]*|\/\*[\s\S]*?\*\/`,
};

const STRINGS = String.raw`"""[\s\S]*?"""|'''[\s\S]*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|` + "`(?:\\\\.|[^`\\\\])*`";

export function canonical(lang) {
  const name = String(lang || "").toLowerCase();
  return KEYWORDS[name] ? name : ALIASES[name] || null;
}

export function highlight(code, lang) {
  const fragment = document.createDocumentFragment();
  const name = canonical(lang);
  if (!name) {
    fragment.append(document.createTextNode(code));
    return fragment;
  }
  const keywords = new Set(KEYWORDS[name].split(" "));
  const pattern = new RegExp(
    `(${COMMENTS[name]})|(${STRINGS})|\\b(\\d+(?:\\.\\d+)?)\\b|([A-Za-z_$][\\w$]*)`,
    "g",
  );
  let last = 0;
  for (const match of code.matchAll(pattern)) {
    const [text, comment, string, number, word] = match;
    let kind = null;
    if (comment) kind = "comment";
    else if (string) kind = "string";
    else if (number) kind = "number";
    else if (word && keywords.has(name === "sql" ? word.toLowerCase() : word)) kind = "keyword";
    if (!kind) continue;
    if (match.index > last) fragment.append(document.createTextNode(code.slice(last, match.index)));
    const span = document.createElement("span");
    span.className = `tok-${kind}`;
    span.textContent = text;
    fragment.append(span);
    last = match.index + text.length;
  }
  if (last < code.length) fragment.append(document.createTextNode(code.slice(last)));
  return fragment;
}
