"""`llmkit simulate`: an OpenAI-compatible fake LLM server answering from markdown files or ClickHouse."""
