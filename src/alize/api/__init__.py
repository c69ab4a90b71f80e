"""The HTTP layer: thin FastAPI routers that parse wire models, call services, encode replies."""
