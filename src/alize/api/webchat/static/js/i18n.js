// Interface strings from /chat/static/i18n/<lang>.json. The language is the user's saved
// choice, else the browser's, else English.

export const LANGUAGES = { en: "English", fr: "Français", de: "Deutsch", es: "Español", it: "Italiano" };

let strings = {};
let fallback = {};
let current = "en";

async function load(lang) {
  const response = await fetch(`/chat/static/i18n/${lang}.json`, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`no translations for ${lang}`);
  return response.json();
}

export function browserLanguage() {
  for (const tag of navigator.languages || [navigator.language || "en"]) {
    const code = String(tag).slice(0, 2).toLowerCase();
    if (code in LANGUAGES) return code;
  }
  return "en";
}

export async function setLanguage(lang) {
  const code = lang in LANGUAGES ? lang : "en";
  if (!Object.keys(fallback).length) fallback = await load("en");
  strings = code === "en" ? fallback : await load(code);
  current = code;
  document.documentElement.lang = code;
  return code;
}

export function language() {
  return current;
}

export function t(key, vars = {}) {
  const template = strings[key] ?? fallback[key] ?? key;
  return template.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : ""));
}
