"""The API's routes, one module per resource: ``jobs``, ``webhooks``, ``operations``."""
