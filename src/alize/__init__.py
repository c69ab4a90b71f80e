"""Alizé: a self-hostable Models-as-a-Service platform.

Serves open models over OpenAI-, Mistral- and Azure-compatible APIs with llama.cpp speed, on a
laptop with a bundled model or across a cluster. See docs/architecture.md for the map.
"""

__version__ = "0.1.0"
