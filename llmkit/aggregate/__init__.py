"""`llmkit aggregate`: idempotent pub-sub event aggregator (seed 004); `publisher.py` is `llmkit publish`."""
