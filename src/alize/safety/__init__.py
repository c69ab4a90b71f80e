"""Content safety: a two-stage learned multi-label classifier (fine-tuned MiniLM as int8 ONNX for
English, USE multilingual for French, German, Spanish and Italian), checksum-verified PII
detection, and the engine-neutral ``Moderator`` service that combines them.

Entry points: :func:`alize.safety.moderator.create_moderator` (service object),
:mod:`alize.safety.render` (OpenAI / Mistral response shapes), :mod:`alize.safety.pii`
(``detect`` / ``redact``); ``python -m alize.safety.finetune`` and
``python -m alize.safety.multilingual_train`` rewrite the shipped weights,
``python -m alize.safety.train`` those of the previous classifier, ``alize-ngram``.
Nothing heavy is imported or loaded here.
"""
