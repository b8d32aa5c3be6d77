"""Batch jobs as folders: the durable record that the queue, the CLI and the HTTP service share.

- ``folder``: create, load and find job folders; paths, shard files, leases on disk
- ``leases``: ``reconcile``, which re-queues every unfinished shard no live worker holds
- ``shards``: score one shard into its result file
- ``results``: finish a job (summary, plot, ``results.csv``), its status, its results read back
- ``export``: a finished job's results as CSV, one FHIR Bundle, or FHIR Bulk Data NDJSON
- ``plot``: the job's ``summary.png``
- ``reviews``: readers' reviews of a finished job's results
- ``dicom_outputs``: a DICOM-node job's SR and Secondary Capture per image

Nothing here imports a queue, a web framework or TensorFlow; ``service/worker/queue.py`` adapts it to Huey.
"""
