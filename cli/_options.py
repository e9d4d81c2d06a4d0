"""Option-value parsing shared by the commands: comma lists, WIDTHxHEIGHT sizes, and the click types of
the numeric options (finite, in range, checked when the command line is parsed)."""

from __future__ import annotations

import math
import re

import click

from sipvis.errors import SipvisError

_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def split_commas(values: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """('a,b', 'c') -> ('a', 'b', 'c'): repeatable options that also take comma-separated lists."""
    return tuple(v.strip() for value in values for v in value.split(",") if v.strip())


def parse_size(text: str, option: str = "--size") -> tuple[int, int]:
    """'640x360' (also 'X' or '×') -> (width, height); anything else raises a one-line SipvisError.
    Range checks belong to the command: what fits depends on what the size is for (`Size` checks them
    for an option)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise SipvisError(f"{option} must look like WIDTHxHEIGHT, e.g. 640x360; got {text!r}")
    return int(m.group(1)), int(m.group(2))


class Size(click.ParamType):
    """A WIDTHxHEIGHT option -> (width, height), checked while the command line is parsed: the format,
    both sides in [low, high], and even sides when `even` (what mp4 encoding needs)."""

    name = "WIDTHxHEIGHT"

    def __init__(self, low: int = 1, high: int = 4096, even: bool = False) -> None:
        self.low, self.high, self.even = low, high, even

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        m = _SIZE_RE.match(str(value))
        if not m:
            self.fail(f"{value!r} must look like WIDTHxHEIGHT, e.g. 640x360.", param, ctx)
        width, height = int(m.group(1)), int(m.group(2))
        if not (self.low <= width <= self.high and self.low <= height <= self.high):
            self.fail(f"{value!r}: width and height must be between {self.low} and {self.high}.", param, ctx)
        if self.even and (width % 2 or height % 2):
            self.fail(f"{value!r}: width and height must be even.", param, ctx)
        return width, height


class FiniteFloat(click.FloatRange):
    """A number option: `nan` and `inf` are refused (they pass float() and every comparison range
    check), then the range `click.FloatRange` takes is checked. Errors are click's usage errors
    (`Error: Invalid value for '--fps': ...`, exit 2), raised while the command line is parsed."""

    name = "number"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


# the types of the numeric options, shared by every command (one meaning, one check per kind of value)
SECONDS = FiniteFloat(min=0)  # a time in the input: --start, --end
RATE = FiniteFloat(min=0, min_open=True)  # frames per second: --fps
SCORE = FiniteFloat(min=0, max=1)  # a detection score threshold: --score-thr
COUNT = click.IntRange(min=1)  # at least one: --max-dets, --max-frames, --vid-stride, --subset, a camera --width
COUNT_OR_AUTO = click.IntRange(min=0)  # 0 means "the default for the device": --batch, bench --frames
NON_NEGATIVE = click.IntRange(min=0)  # --warmup, --reconnect, --camera
DURATION = FiniteFloat(min=0, min_open=True)  # a run's length in seconds: live --duration
FRACTION = FiniteFloat(min=0, max=1, min_open=True, max_open=True)  # a share strictly between 0 and 1: --ratio
