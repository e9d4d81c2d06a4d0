"""Option-value parsing shared by the commands: comma lists and WIDTHxHEIGHT sizes."""

from __future__ import annotations

import re

from sipvis.errors import SipvisError

_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def split_commas(values: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """('a,b', 'c') -> ('a', 'b', 'c'): repeatable options that also take comma-separated lists."""
    return tuple(v.strip() for value in values for v in value.split(",") if v.strip())


def parse_size(text: str, option: str = "--size") -> tuple[int, int]:
    """'640x360' (also 'X' or '×') -> (width, height); anything else raises a one-line SipvisError.
    Range checks belong to the command: what fits depends on what the size is for."""
    m = _SIZE_RE.match(text)
    if not m:
        raise SipvisError(f"{option} must look like WIDTHxHEIGHT, e.g. 640x360; got {text!r}")
    return int(m.group(1)), int(m.group(2))
