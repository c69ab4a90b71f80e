"""The chat assistant's services ("Le Chat"): accounts, sessions, conversations, documents and
retrieval, replies.

Plain classes built in the app's lifespan, with no HTTP: the routes and the static front end
that use them live in :mod:`alize.api.webchat`. Replies and document embeddings go
through the gateway's policy pipeline, so they are limited, charged and metered like API calls.
"""
