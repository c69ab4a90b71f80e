// OpenAI-shaped error codes → a sentence in the user's language.
import { t } from "./i18n.js";

export function errorText(error) {
  const code = error?.code || "";
  const type = error?.type || "";
  if (code === "insufficient_quota" || type === "insufficient_quota") return t("error.quota");
  if (code === "login_locked" || code === "login_busy") return t("error.login_locked");
  if (type === "rate_limit_error" || code === "rate_limit_exceeded") return t("error.rate_limit");
  if (code === "content_filter") return t("error.content_filter");
  if (["queue_full", "engine_unavailable", "service_unavailable"].includes(code)) return t("error.busy");
  if (code === "model_not_found") return t("error.model_not_found");
  if (code === "context_length_exceeded") return t("error.context_length");
  if (["payload_too_large", "file_too_large", "too_many_pages"].includes(code)) return t("error.too_large");
  if (code === "unsupported_file") return t("error.unsupported_file");
  if (code === "not_logged_in") return t("error.session");
  if (code === "network") return t("error.network");
  return t("error.generic", { message: error?.message || code || "?" });
}
