"""Batch jobs as folders: the durable record that the queue, the CLI and the HTTP service share.

- ``folder``: create, load and find job folders; paths, atomic writes, leases on disk
- ``leases``: ``reconcile``, which re-queues every unfinished shard no live worker holds
- ``shards``: score one shard into its result file
- ``results``: finish a job (summary, plot, ``results.csv``), its status, its CSV/FHIR export
- ``plot``: the job's ``summary.png``

Nothing here imports a queue, a web framework or TensorFlow; ``service/worker.py`` adapts it to Huey.
"""
