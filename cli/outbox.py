"""``pneumoscan outbox list|retry|drop``: what waits to be delivered, what was set aside, and
what an operator does about it."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from cli.common import EXIT_OK, EXIT_USAGE
from pneumoscan.delivery.destinations import DESTINATIONS, outboxes
from pneumoscan.settings import get_settings


def _chosen(args: argparse.Namespace) -> dict:
    boxes = outboxes(get_settings())
    return {name: box for name, box in boxes.items() if args.destination in (None, name)}


def cmd_list(args: argparse.Namespace) -> int:
    messages = [
        message for box in _chosen(args).values() for message in box.messages() if args.state in (None, message.state)
    ]
    if args.json:
        for message in messages:
            print(json.dumps(message.as_dict()))
        return EXIT_OK
    if not messages:
        print("No messages waiting or failed.")
        return EXIT_OK
    now = datetime.now(UTC).timestamp()
    for message in messages:
        due = ""
        if message.state == "pending" and message.next_attempt and message.next_attempt > now:
            due = f", next attempt in {message.next_attempt - now:.0f} s"
        error = f": {message.last_error}" if message.last_error else ""
        print(
            f"{message.destination:5} {message.state:7} {message.message_id}  attempts {message.attempts}{due}{error}"
        )
    return EXIT_OK


def cmd_retry(args: argparse.Namespace) -> int:
    if not args.ids and not args.all:
        print("pneumoscan: name the message ids to retry, or --all", flush=True)
        return EXIT_USAGE
    count = sum(box.retry(None if args.all else args.ids) for box in _chosen(args).values())
    print(f"{count} message(s) due again; the worker, the service or the DICOM node sends them in its next round.")
    return EXIT_OK


def cmd_drop(args: argparse.Namespace) -> int:
    count = sum(box.drop(args.ids) for box in _chosen(args).values())
    print(f"Dropped {count} message(s); each is recorded in its outbox's dropped.log.")
    return EXIT_OK if count == len(set(args.ids)) else EXIT_USAGE


def add_commands(commands: argparse._SubParsersAction) -> None:
    outbox = commands.add_parser("outbox", help="results waiting for, or refused by, HL7, FHIR and DICOM destinations")
    actions = outbox.add_subparsers(dest="action", required=True)

    def with_destination(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--destination", choices=DESTINATIONS, default=None, help="one outbox (default: all)")
        return parser

    listing = with_destination(actions.add_parser("list", help="messages waiting or failed, oldest first"))
    listing.add_argument(
        "--state", choices=["pending", "failed"], default=None, help="only waiting or only failed messages"
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per message")
    listing.set_defaults(handler=cmd_list)
    retry = with_destination(
        actions.add_parser(
            "retry", help="put failed messages back in the outbox (attempts reset) and make waiting ones due now"
        )
    )
    retry.add_argument("ids", nargs="*", help="message ids (as `list` shows them)")
    retry.add_argument("--all", action="store_true", help="every failed and waiting message")
    retry.set_defaults(handler=cmd_retry)
    drop = with_destination(actions.add_parser("drop", help="delete messages for good (recorded in dropped.log)"))
    drop.add_argument("ids", nargs="+", help="message ids (as `list` shows them)")
    drop.set_defaults(handler=cmd_drop)
