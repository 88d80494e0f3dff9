"""Signed webhooks: Standard Webhooks signatures, target URL checks, delivery from the store's outbox."""
