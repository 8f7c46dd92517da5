"""`report` and `display` as the WebUI's: print and go on (hooks' exceptions never stop generation)."""

import sys
import traceback

recorded: list[str] = []


def report(message: str, *, exc_info: bool = False) -> None:
    text = message + ("\n" + traceback.format_exc() if exc_info else "")
    recorded.append(text)
    print(text, file=sys.stderr)


def display(e: Exception, task: str, *, full_traceback: bool = False) -> None:
    recorded.append(f"{task}: {type(e).__name__}: {e}")
    print(f"{task}: {type(e).__name__}: {e}", file=sys.stderr)


def print_error(message: str, exc_info: bool = False) -> None:
    report(message, exc_info=exc_info)
