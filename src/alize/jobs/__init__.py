"""Work beside the request path: files, the durable job queue and its workers, batch, fine-tuning."""
