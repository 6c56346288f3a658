"""The scheduler: which waiting run starts next, where every waiting run stands, and repairs.

The store, not the broker, decides the order in which runs start. From an upload to a worker's claim::

    POST /v1/jobs ── limits (rate, waiting cap) ── submit: a new run, held ─┐ (Filing)
                                                                           │ its audio filed
          backlog:<priority>:<client>  ◀── enter ─────────────────────────┘ (Backlog)
               │ dispatch: high before low, clients in turns, at most ``ahead`` in the broker
               ▼
          the broker's queue  ── publish confirmed ──▶  a worker's claim ── lease (deadline)
               (Dispatched)                               │ a low run while high ones wait: back
                                                          ▼ to the front of its backlog (deferred)
                                                       running ── ended by the worker, or failed
                                                                  ``worker_lost`` by the janitor

- ``backlog``: the ordered sets of waiting runs and the turns the clients take
- ``dispatch``: moves runs from the backlogs into the broker
- ``position``: a waiting run's place and ETA, without a scan
- ``limits``: per-client request rate and cap on waiting runs
- ``leases``: running runs' deadlines, expired by the janitor
- ``repair``: named steps that mend what a process left midway (``ticker`` runs them)
- ``readiness``: which workers are live (the API's ``/readyz``, ``ahead`` and ETAs read it)
"""
