"""Management commands of the webhooks_emitter Django app."""
