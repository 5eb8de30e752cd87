"""Files that come inside installed packages, found without importing those packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fontTools.ttLib import TTFont

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


def korean_web_font() -> TTFont:
    """NanumGothic without its TSI0-TSI5 tables: the hinting sources of Microsoft's VTT, which it
    ships empty, for which browsers' font sanitiser (OTS) refuses the whole font and fontTools'
    subsetter prints a warning a table."""
    font = TTFont(korean_font_path())
    for tag in [tag for tag in font.keys() if tag.startswith("TSI")]:
        del font[tag]
    return font
