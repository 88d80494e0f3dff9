"""`llmkit orchestrate`: asynchronous inference jobs (seed 003)."""
