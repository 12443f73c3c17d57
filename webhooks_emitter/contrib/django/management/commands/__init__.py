"""``webhooks_worker``, ``webhooks_status``, ``webhooks_failed``, ``webhooks_replay``."""
