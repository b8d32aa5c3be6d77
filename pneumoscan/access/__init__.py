"""Who may do what, and who did what: the clients file with its scopes, per-client rate limits, and
the audit trail (a durable file, and DICOM audit messages for a syslog collector or ATNA repository).

Imports the shared ground only.
"""
