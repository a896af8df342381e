"""MkDocs hook: pages of the site whose text lives elsewhere in the repository.

ARCHITECTURE.md, CHANGELOG.md and the benchmark's bench/README.md and bench/LOG.md are read
where they are (beside the code they describe, and on the repository's front page), so the
site shows them as they are instead of a copy that could fall behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent

# page on the site -> file in the repository
PAGES = {
    "architecture.md": "ARCHITECTURE.md",
    "changelog.md": "CHANGELOG.md",
    "bench/README.md": "bench/README.md",
    "bench/LOG.md": "bench/LOG.md",
}


def on_files(files: Files, config: Any) -> Files:
    for page, source in PAGES.items():
        path = ROOT / source
        if not path.is_file():
            raise FileNotFoundError(f"docs/hooks.py: {source} is missing")
        files.append(File.generated(config, page, abs_src_path=str(path)))
    return files
