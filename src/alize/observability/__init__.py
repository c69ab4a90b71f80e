"""Observability with no HTTP: Prometheus metrics (:mod:`.metrics`), the llama.cpp workers' own
metrics merged under a deployment label (:mod:`.workers`), structured JSON logs with request ids
(:mod:`.logs`) and optional OpenTelemetry traces (:mod:`.traces`).

Everything here watches the gateway through its observer interface
(:class:`alize.gateway.observer.RequestObserver`) and reads the deployment manager at scrape
time; nothing in the request path depends on it.
"""
