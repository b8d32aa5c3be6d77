"""Every option of every ``pneumoscan`` command says what it is for."""

from __future__ import annotations

import argparse

from cli import build_parser


def parsers(parser: argparse.ArgumentParser, name: str = "pneumoscan") -> dict[str, argparse.ArgumentParser]:
    """``parser`` and each of its subcommands' parsers, at any depth, by their command line."""
    found = {name: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, subparser in action.choices.items():
                found.update(parsers(subparser, f"{name} {command}"))
    return found


def test_every_argument_of_every_command_has_help():
    every = parsers(build_parser())
    assert {"pneumoscan predict", "pneumoscan score", "pneumoscan outbox retry"} <= every.keys(), "the walk sees them"
    missing = sorted(
        f"{command}: {'/'.join(action.option_strings) or action.dest}"
        for command, parser in every.items()
        for action in parser._actions
        if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
        and action.help != argparse.SUPPRESS
        and not (action.help or "").strip()
    )
    assert missing == []


def test_every_command_has_help():
    commands = [
        f"{name}: {choice.dest}"
        for name, parser in parsers(build_parser()).items()
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for choice in action._choices_actions
        if not (choice.help or "").strip()
    ]
    assert commands == []
