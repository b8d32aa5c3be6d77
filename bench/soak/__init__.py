"""``make soak``: the whole stack on this machine under load and a seeded fault schedule, then the
ledger that says whether anything was lost, sent twice, left hanging or leaking.

``python -m bench.soak --duration 600 --users 16 --seed 1`` (``make soak DURATION=... USERS=...
SEED=...``) writes ``bench/out/soak/ledger.json`` and ``soak.png`` and exits 1 on any violation.
"""
