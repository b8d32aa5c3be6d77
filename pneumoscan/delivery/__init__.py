"""Results leaving for their destinations: the durable outbox, and its senders (MLLP, a FHIR
server over HTTP, C-STORE to the PACS) behind one interface.

Imports the shared ground and ``reports``.
"""
