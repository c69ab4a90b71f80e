"""Mistral-specific wire models (where Mistral's shape differs from OpenAI's on a shared path)."""
