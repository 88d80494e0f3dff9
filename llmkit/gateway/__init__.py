"""`llmkit gateway`: a chatbot backend in front of upstream model servers (seed 001)."""
