"""Shadow comparison: admission, replay to the other side, judging, noise, redaction, dry runs, storage.

The modules, from the data path's side down (each imports only modules listed after it):

- ``admission``: ``Shadower`` (the gateway's ``ShadowSink``: wants/submit, the bounded queue, jobs in
  flight, start/stop, the deadline sweep's timer). No I/O of its own. Compiled (``proxy.compiled``):
  ``open_sink``, which connects the store and starts a ``Shadower``, is in ``proxy.ops.serve``.
- ``replay``: shadow calls on the upstream pools and pipes; the only module that knows the pool types.
  Sockets (through proxy.upstream).
- ``judge``: a job's results made into outcomes (matched, differed, noise, error) and recorded. No I/O.
- ``unanswered``: a shadow side that stops answering: the failure metric, a warning line per route every
  few seconds, and the streak the report reads. No I/O.
- ``noise``: the A/A rate limit and the learned noise paths. No I/O (reads through the store).
- ``samples``: a differing exchange made into a redacted, trimmed ``Sample``. No I/O.
- ``compare`` (structural comparison), ``bytecheck`` (the byte fast path), ``redact``, ``dryrun``: pure.
- ``redis_pg`` (``RedisPgStore``, the product's store), ``redis_counters`` (Redis) and ``pg_samples``
  (PostgreSQL) do the storage I/O; ``store`` holds the ``DiffStore`` protocol and the shared types.

Settings come from above: ``proxy.ops.settings.shadow_env`` reads the environment, ``proxy.ops.serve``
opens the sink with the values.
"""
