"""``pneumoscan dicom-node``: receive studies from a PACS by C-STORE and send results back."""

from __future__ import annotations

import argparse
import logging

from cli.common import EXIT_OK
from pneumoscan.settings import get_settings


def cmd_dicom_node(args: argparse.Namespace) -> int:
    from service.dicom_node.node import DicomNode
    from service.worker.queue import submit

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()

    def queue_study(folder, outbox) -> None:
        submit(folder, None, None, dicom_outbox=outbox)

    DicomNode(settings, queue_study).serve()
    return EXIT_OK


def add_commands(commands: argparse._SubParsersAction) -> None:
    node = commands.add_parser(
        "dicom-node",
        help="a DICOM C-STORE node: studies in from a PACS, results (SR, Secondary Capture) back "
        "(PNEUMOSCAN_DICOM_* settings)",
    )
    node.set_defaults(handler=cmd_dicom_node)
