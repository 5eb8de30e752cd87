"""Files that come inside installed packages, found without importing those packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

FONT_PACKAGE = "koreanize_matplotlib"
FONT_FILE = "NanumGothic.ttf"


def korean_font_path() -> Path:
    """NanumGothic.ttf as shipped by koreanize-matplotlib."""
    spec = importlib.util.find_spec(FONT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"Korean labels need the font shipped by {FONT_PACKAGE}: pip install koreanize-matplotlib"
        )
    return Path(spec.submodule_search_locations[0]) / "fonts" / FONT_FILE
