"""Serving: one request as a job (`jobs`), the worker process that owns the GPU, output folders and retention."""
