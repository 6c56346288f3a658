"""The HTTP side of emotionq, used only by the API process (``emotionq.api`` assembles it).

- ``routes/``: the routes, one module per resource (jobs, webhooks, operations)
- ``deps``: what routes are handed (the services, the caller's client)
- ``form``: the upload form, validated; ``upload``: the multipart body, streamed
- ``problems``: errors as HTTP problems, the one table of statuses; ``schemas``, ``openapi``: the document
- ``keys``: API keys; ``server``: uvicorn with the slow-client guard; ``page/``: the upload page
"""
