"""Wire models only: the JSON shapes of the OpenAI, Mistral and Azure APIs as pydantic models.

Imports pydantic and ``alize.domain`` and nothing else of ours, so the shapes can be reused by
clients, docs and tests without pulling in engines, storage or the web framework.
"""
