"""Building blocks every llmkit server shares: cache, limiter, queue, HTTP middlewares, serving."""
