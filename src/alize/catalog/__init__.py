"""The model catalog: model cards, where model files come from, and what GGUF files say.

Kept import-light on purpose: the GGUF inspector child process imports this package, and its
start-up time is paid on every ``alize models add``. Import from the submodules:
``alize.catalog.cards``, ``alize.catalog.sources``, ``alize.catalog.gguf``,
``alize.catalog.builtin``.
"""
