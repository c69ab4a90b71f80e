"""Engines: the narrow interface in ``base`` and its implementations, found through ``registry``."""
