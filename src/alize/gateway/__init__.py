"""Gateway: the policy pipeline between the HTTP layer and deployments (no web framework here)."""
