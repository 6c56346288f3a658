"""A minimal emotionq webhook receiver that verifies signatures with the public library.

    pip install standardwebhooks
    EMOTIONQ_WEBHOOK_SECRETS=whsec_... python examples/webhook_receiver.py 9000

Get the secrets from ``GET /v1/webhooks/secrets``; during a rotation list both,
comma-separated. Answers 204 to a verified delivery, 400 to anything else, and
ignores a ``webhook-id`` it has already processed (retries reuse it).
"""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

VERIFIERS = [Webhook(s.strip()) for s in os.environ["EMOTIONQ_WEBHOOK_SECRETS"].split(",") if s.strip()]
SEEN: set[str] = set()  # use a database in production


def verify(body: bytes, headers: dict) -> dict:
    """The event, if any current secret signed it within the last 5 minutes."""
    for verifier in VERIFIERS:
        try:
            return verifier.verify(body, headers)
        except (WebhookVerificationError, ValueError):
            continue
    raise WebhookVerificationError("no secret matches")


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            event = verify(body, dict(self.headers))
        except WebhookVerificationError:
            self.send_response(400)
            self.end_headers()
            return
        if self.headers["webhook-id"] not in SEEN:
            SEEN.add(self.headers["webhook-id"])
            job = event["data"]
            print(json.dumps({"type": event["type"], "job": job["id"], "status": job["status"],
                              "top_label": (job.get("output") or {}).get("top_label")}), flush=True)
        self.send_response(204)
        self.end_headers()


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 9000), Handler).serve_forever()
