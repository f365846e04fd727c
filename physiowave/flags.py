"""Command-line help shared by every script (training, preprocessing): each flag's default shown where it says
something the help text does not."""
from __future__ import annotations

import argparse

__all__ = ["DefaultsFormatter"]

class DefaultsFormatter(argparse.HelpFormatter):
    """``--help`` shows each flag's default as ``(default: X)``, unless the help already speaks of its default or
    the default is None, False or empty (the value then comes from elsewhere, as the help says, or the flag is off)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        switch = action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction)  # store_true: off
        if (not action.option_strings or "default" in text.lower() or default is None or default is False
                or default == "" or default is argparse.SUPPRESS or switch):
            return text
        return f"{text} (default: %(default)s)".lstrip()
