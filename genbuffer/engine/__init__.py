"""The compaction engine: one way to run compactions, whoever asks for them.

``run.run_one(request)`` runs one compaction and says what it came to (an
``Outcome``, with the result beside it): the one place an exception becomes an
outcome. ``pool.Pool`` runs several at once, each in its own thread and
transaction (one on SQLite). Two runs use them:

* a burst run, ``burst.compact_pending`` (`genbuf compact-pending`, for cron): a scan
  chooses the buffers (``selection``), the pool compacts them, the run ends;
* a stream run, ``worker.Worker`` (`genbuf worker`): the compaction-events stream
  delivers the buffers, the pool compacts them until the worker is stopped; one
  worker of the fleet at a time sweeps for what nobody announced (``sweeper``).

Both judge idleness by ``idleness.quiet_for``. A burst run is a cron job like the
others: its lease, progress and run record come from ``genbuffer.operations``.
"""
