"""The chat web app ("Le Chat"): a multilingual assistant in the browser, served at ``/``.

Services (accounts, sessions, conversations, documents, replies) are plain classes built in the
app's lifespan; only ``alize.chat.routes`` knows about HTTP. The front end is static ES modules
under ``static/``, served as they are (no build step).
"""
