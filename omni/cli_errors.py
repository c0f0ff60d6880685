"""One line for a bad command line or config, instead of jsonargparse's usage block with the cause in its middle.

jsonargparse reports, e.g., a misspelt key inside a ``class_path`` config as ~60 lines: the whole usage, a tip, then
``Parser key "model": Does not validate against any of the Union subtypes ... Problem with given class_path 'X':
Group 'trunk' does not accept option 'dpeth' ... Given value: {...}``. ``condense`` keeps the key, the class and the
specific cause; ``OmniArgumentParser.error`` prints that one line (ending with where the keys are listed) and exits
with status 2, as argparse does.
"""

from __future__ import annotations

import re
import sys
from typing import NoReturn

from lightning.pytorch.cli import LightningArgumentParser

__all__ = ["OmniArgumentParser", "condense", "one_line"]

_NOISE = (
    re.compile(r"^Does not validate against any of the Union subtypes"),
    re.compile(r"^Subtypes:"),
    re.compile(r"^Errors:"),
    re.compile(r"^- Expected a <class 'NoneType'>"),
    re.compile(r"^Given value"),
    re.compile(r"^- Expected a <class"),
)
_KEY = re.compile(r'^Parser key "([^"]+)":\s*(.*)$')
_CLASS = re.compile(r"^- Problem with given class_path '([^']+)':\s*(.*)$")
# jsonargparse's report of a constructor's error: the base classes tried name the part, the given value its class
_PART = re.compile(r"^Subtypes: \[<class 'lightning\.pytorch\.core\.(module|datamodule)\.")
_GIVEN_CLASS = re.compile(r"^Given value: Namespace\(class_path='([^']+)'")


def condense(message: str) -> str:
    """jsonargparse's error message -> one line: ``key (class): cause``."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return message.strip()
    key, cls, causes = None, None, []
    for line in lines:
        if m := _PART.match(line):
            key = key or {"module": "model", "datamodule": "data"}[m.group(1)]
        if m := _GIVEN_CLASS.match(line):
            cls = cls or m.group(1)
        if m := _KEY.match(line):
            key = key or m.group(1)
            line = m.group(2)
        if m := _CLASS.match(line):
            cls = cls or m.group(1)
            line = m.group(2)
        if line and not any(p.match(line) for p in _NOISE):
            causes.append(line.removeprefix("- ").rstrip(":"))
    where = " ".join(part for part in (key, f"({cls})" if cls else None) if part)
    cause = "; ".join(dict.fromkeys(causes)) or lines[0]
    return f"{where}: {cause}" if where else cause


def one_line(error: BaseException) -> str:
    """An error's message as one line. A DataLoader worker's error carries the worker's whole traceback ("Caught
    ValueError in DataLoader worker process 0. Original Traceback ..."): only its last line, the message, is kept."""
    text = str(error)
    if "Original Traceback" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1].strip()
        text = last.removeprefix(f"{type(error).__name__}: ")
    return " ".join(text.split())


class OmniArgumentParser(LightningArgumentParser):
    """``LightningArgumentParser`` whose errors are one line (``condense``)."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)  # raises jsonargparse's ArgumentError, which callers catch
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        sys.stderr.write(f"{prog}: error: {condense(message)} (every key: {prog} --help)\n")
        self.exit(2)
