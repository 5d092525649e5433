"""The cron jobs besides compaction, and what every cron job shares.

One module per command: ``purge_chunks`` (purge-chunks), ``purge_objects``
(purge-objects), ``offload_compacted`` (offload-compacted), ``migrate_compacted``
(migrate-compacted-from-metadata). What the cron jobs (compact-pending with them)
share: ``exclusion`` (one run at a time: a lease held and renewed), ``job_runs`` (a
run recorded in the database and, in ``job_textfile``, for node_exporter) and
``batches`` (progress, id ranges).
"""
