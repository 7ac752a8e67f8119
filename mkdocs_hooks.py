"""mkdocs hooks (mkdocs.yml ``hooks:``): one set of pages for GitHub and the site.

- Anchors are made as GitHub makes them, so ``[x](page.md#a-b--c)`` written
  for GitHub also works on the site (and ``mkdocs build --strict`` checks it).
- A link to a file of the repository outside ``docs/`` (``../examples/...``)
  cannot be served by the site: there it becomes the path, in code.
"""

from __future__ import annotations

import re
from typing import Any

_OUTSIDE = re.compile(r"\[([^\]]+)\]\(\.\./(?!docs/)([^)#\s]+)\)")


def github_slug(value: str, separator: str = "-") -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", value.strip().lower()).replace(" ", separator)


def on_config(config: Any) -> Any:
    config["mdx_configs"].setdefault("toc", {})["slugify"] = github_slug
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return _OUTSIDE.sub(_as_path, markdown)


def _as_path(link: re.Match[str]) -> str:
    text, path = link[1], link[2]
    return text if path.rstrip("/") in text else f"{text} (`{path}`)"
