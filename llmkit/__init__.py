"""llmkit: the servers an LLM application needs around its model, in one command-line toolkit."""

from __future__ import annotations

__version__ = "0.1.0"
