"""MkDocs hooks (``hooks:`` in ``mkdocs.yml``): the generated reference pages, and Markdown as GitHub reads it."""

from __future__ import annotations

import re

import gen_reference  # docs/gen_reference.py: MkDocs puts this folder on sys.path while loading hooks


def on_files(files, config):
    """Add the generated reference pages and the copied files to the site."""
    from mkdocs.structure.files import File

    for path, build in gen_reference.PAGES.items():
        files.append(File.generated(config, path, content=build()))
    for path, source in gen_reference.copied_files().items():
        files.append(File.generated(config, path, content=(gen_reference.REPO_ROOT / source).read_bytes()))
    return files


_LIST_ITEM = re.compile(r"^(?:[-*+]|\d+\.) ")


def on_page_markdown(markdown: str, **kwargs) -> str:
    """Let a list follow its introducing line directly, as GitHub renders it (Python-Markdown wants a
    blank line between them); the pages read the same on GitHub and in the site."""
    lines, fenced, previous, inner_paragraph = [], False, "", False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        item = not fenced and _LIST_ITEM.match(line.lstrip())
        if (
            item
            and previous.strip()
            and not _LIST_ITEM.match(previous.lstrip())
            and (inner_paragraph or not previous.startswith((" ", "\t", "|", "#")))
        ):
            lines.append("")  # ... and a paragraph inside an item from the next item
        if item:
            inner_paragraph = False
        elif line.startswith((" ", "\t")) and line.strip() and not previous.strip():
            inner_paragraph = True
        lines.append(line)
        previous = line
    return "\n".join(lines) + "\n"
