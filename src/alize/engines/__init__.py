"""Engines: the narrow interface in ``base``, the OpenAI wire every upstream speaks in
``openai_wire``, and the implementations (``llamacpp``, ``torch``, ``remote``), found by kind
through ``registry`` (the ``alize.engines`` entry points, :class:`alize.plugins.Registry`)."""
