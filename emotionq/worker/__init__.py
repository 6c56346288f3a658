"""The inference worker's side, used only in worker processes (``emotionq.tasks`` wires it to Celery).

- ``runtime``: what one worker process holds (settings, store, blobs, the model) and its heartbeat
- ``scoring``: a batch of runs claimed, decoded, scored together, each outcome recorded
- ``batching``: more waiting messages taken from the queue for a batch
"""
