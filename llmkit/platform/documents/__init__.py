"""Documents: chunking for the keyword index (routes, indexing jobs and embeddings come later)."""
