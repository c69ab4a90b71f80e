"""Background work, with no HTTP: files, the durable job queue and its workers, and batches.

``files`` stores uploads and outputs; ``queue`` is the one table jobs wait in; ``worker`` claims
and runs them with a handler per kind; ``batches`` and ``batch_runner`` are the ``batch`` kind.
Fine-tuning jobs reuse the same files, queue and worker with a handler of their own.
"""
