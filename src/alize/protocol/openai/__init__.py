"""OpenAI-compatible wire models (chat, completions, models, errors)."""
