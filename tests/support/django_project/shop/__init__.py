"""The test project's app: one model, views that emit, and a receiver view."""
