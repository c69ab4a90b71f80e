// A stacked bar chart of tokens per day, drawn as SVG elements (no markup strings).

const NS = "http://www.w3.org/2000/svg";

function el(tag, attrs, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

export function tokensChart(rows) {
  const width = 900, height = 220, pad = 30;
  const svg = el("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img" });
  const total = rows.reduce((s, r) => s + r.prompt_tokens + r.completion_tokens, 0);
  svg.dataset.totalTokens = String(total);
  svg.append(el("title", {}, `Tokens per day (${total} in all)`));
  const max = Math.max(1, ...rows.map((r) => r.prompt_tokens + r.completion_tokens));
  const step = rows.length ? (width - 2 * pad) / rows.length : 0;
  const bar = Math.max(2, step * 0.7);
  const scale = (height - 2 * pad) / max;
  rows.forEach((r, i) => {
    const x = pad + i * step;
    const hp = r.prompt_tokens * scale, hc = r.completion_tokens * scale;
    const base = height - pad;
    const p = el("rect", { class: "prompt", x, y: base - hp, width: bar, height: hp });
    p.append(el("title", {}, `${r.group}: ${r.prompt_tokens} prompt tokens`));
    const c = el("rect", { class: "completion", x, y: base - hp - hc, width: bar, height: hc });
    c.append(el("title", {}, `${r.group}: ${r.completion_tokens} completion tokens`));
    svg.append(p, c, el("text", { x, y: height - pad / 3 }, String(r.group).slice(5, 10)));
  });
  svg.append(el("text", { x: pad, y: pad / 1.5 }, `max ${max} tokens/day`));
  return svg;
}
