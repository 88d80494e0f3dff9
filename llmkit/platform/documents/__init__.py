"""Documents: chunking, the index job and the /api/documents and /api/search routes (embeddings later)."""
