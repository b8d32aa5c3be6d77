"""``pneumoscan keys add|list|revoke``: the clients that may call the HTTP API and their scopes;
``pneumoscan audit``: who did what, and who saw a patient's results."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime, timedelta

from cli.common import EXIT_OK
from pneumoscan.access.audit import AuditRecord, read_records, select
from pneumoscan.access.clients import SCOPE_MEANINGS, KeysFile, scopes_from
from pneumoscan.errors import JobNotFinished, JobNotFound
from pneumoscan.settings import get_settings

RELATIVE = re.compile(r"(\d+)([mhd])")
UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def _keys() -> KeysFile:
    return KeysFile(get_settings().keys_path)


def cmd_keys_add(args: argparse.Namespace) -> int:
    keys = _keys()
    entry, key = keys.add(args.name, scopes_from(args.scopes), args.rate)
    print(
        f"Client {entry.name!r} may: {', '.join(entry.scopes)}; written to {keys.path}. Its key follows, "
        "shown only now: give it to the client and keep it secret.",
        file=sys.stderr,
    )
    print(key)
    return EXIT_OK


def cmd_keys_list(args: argparse.Namespace) -> int:
    document = _keys().read()
    if not document.clients:
        print(f"No clients in {_keys().path}.")
        return EXIT_OK
    for entry in document.clients:
        if entry.revoked is not None and not args.all:
            continue
        state = f"revoked {entry.revoked:%Y-%m-%d %H:%M}Z" if entry.revoked else "active"
        rate = f"{entry.rate_per_s:g}/s" if entry.rate_per_s is not None else "default rate"
        print(f"{entry.name:24} {','.join(entry.scopes):24} {rate:14} added {entry.created:%Y-%m-%d %H:%M}Z  {state}")
    return EXIT_OK


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    entry = _keys().revoke(args.name)
    print(f"Revoked {entry.name!r}: its key is refused from the next request on (no restart needed).")
    return EXIT_OK


def moment(text: str) -> datetime:
    """``2026-12-01``, ``2026-12-01T08:00`` (UTC unless it says), or ``30m``, ``12h``, ``7d`` ago."""
    if match := RELATIVE.fullmatch(text.strip()):
        return datetime.now(UTC) - timedelta(**{UNITS[match.group(2)]: int(match.group(1))})
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date, a date and time, or 30m/12h/7d") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def patient_files(patient: str) -> dict[str, set[str]]:
    """Each finished job's files of the patient (by the patient id its DICOM images carry)."""
    from pneumoscan.jobs.folder import known_job_dirs, load_job
    from pneumoscan.jobs.results import read_results

    held: dict[str, set[str]] = {}
    for job_dir in known_job_dirs(get_settings().jobs_root):
        try:
            files = {
                result.file or ""
                for result in read_results(job_dir)
                if result.dicom and result.dicom.patient and result.dicom.patient.patient_id == patient
            }
            if files:
                held[load_job(job_dir).job_id] = files
        except (JobNotFinished, JobNotFound, OSError):
            continue
    return held


def _line(record: AuditRecord) -> str:
    what = [f"job {record.job}"] if record.job else []
    if record.whole_job:
        what.append("every result")
    what += record.files[:3] + [f"patient {patient}" for patient in record.patients[:3]]
    who = record.client or "(no key)"
    return (
        f"{record.time:%Y-%m-%d %H:%M:%S}Z {who:20} {record.address or '-':15} {record.action:16} "
        f"{record.status} {record.outcome:8} {' '.join(what)}"
    )


def cmd_audit(args: argparse.Namespace) -> int:
    settings = get_settings()
    held = patient_files(args.patient) if args.patient else None
    records = select(
        read_records(settings.audit_root),
        since=args.since,
        until=args.until,
        client=args.client,
        patient=args.patient,
        job=args.job,
        patient_files=held,
    )
    count = 0
    for record in records:
        count += 1
        print(record.model_dump_json() if args.json else _line(record))
    if not args.json:
        print(f"{count} record(s) in {settings.audit_root}.", file=sys.stderr)
    return EXIT_OK


def add_commands(commands: argparse._SubParsersAction) -> None:
    keys = commands.add_parser("keys", help="the clients that may call the HTTP API, and their scopes")
    actions = keys.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="a new client; prints its key once")
    add.add_argument("name", help="the client's name, as audit records name it (e.g. interface-engine)")
    add.add_argument(
        "--scopes",
        required=True,
        help="comma-separated, or all: " + "; ".join(f"{name}: {meaning}" for name, meaning in SCOPE_MEANINGS.items()),
    )
    add.add_argument("--rate", type=float, default=None, help="its requests per second (default: the service's)")
    add.set_defaults(handler=cmd_keys_add)
    listing = actions.add_parser("list", help="the clients, their scopes and rates (never their keys)")
    listing.add_argument("--all", action="store_true", help="revoked clients too")
    listing.set_defaults(handler=cmd_keys_list)
    revoke = actions.add_parser("revoke", help="refuse a client's key from its next request on")
    revoke.add_argument("name", help="the client, as `keys list` names it")
    revoke.set_defaults(handler=cmd_keys_revoke)

    audit = commands.add_parser("audit", help="who did what through the HTTP API, and who saw a patient's results")
    audit.add_argument("--since", type=moment, default=None, help="from (a date, a UTC time, or 30m, 12h, 7d ago)")
    audit.add_argument("--until", type=moment, default=None, help="before (same forms)")
    audit.add_argument("--patient", default=None, help="a patient id: every record of who saw the patient's results")
    audit.add_argument("--client", default=None, help="one client's records")
    audit.add_argument("--job", default=None, help="one job's records")
    audit.add_argument("--json", action="store_true", help="the records as JSON lines")
    audit.set_defaults(handler=cmd_audit)
