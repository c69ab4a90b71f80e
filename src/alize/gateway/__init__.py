"""Gateway: the policy pipeline between the HTTP layer and deployments (no web framework here).

``pipeline`` is the path every call takes (ticket → screen → prepare → admit → start → filter
and observe → settle); ``generation`` and ``embeddings`` prepare and start; ``auth``, ``keys``,
``limits``, ``budget`` and ``metering`` are the tenancy services it consults; ``tickets`` holds
what one request carries and the ledger row it leaves, ``settling`` settles it exactly once."""
