"""Signed callback webhooks (Standard Webhooks), delivered from their own queue with retries.

- ``secrets``: one ``whsec_`` signing secret per API client, rotatable with overlap
- ``targets``: which callback URLs may be called (SSRF guard)
- ``delivery``: delivery records, one signed attempt, the retry schedule
- ``events``: which jobs get which event when a run changes state
"""
