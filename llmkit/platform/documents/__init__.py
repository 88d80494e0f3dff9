"""Documents: chunking and the /api/documents and /api/search routes (indexing jobs, embeddings later)."""
