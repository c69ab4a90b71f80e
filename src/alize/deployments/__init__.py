"""Deployments: named endpoints over a model, loaded on demand, admitted through a fair queue."""
