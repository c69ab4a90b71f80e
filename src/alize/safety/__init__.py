"""Content safety: a learned multi-label classifier, checksum-verified PII detection, and the
engine-neutral ``Moderator`` service that combines them.

Entry points: :func:`alize.safety.moderator.create_moderator` (service object),
:mod:`alize.safety.render` (OpenAI / Mistral response shapes), :mod:`alize.safety.pii`
(``detect`` / ``redact``), ``python -m alize.safety.train`` (rewrites the shipped weights).
Nothing heavy is imported or loaded here.
"""
