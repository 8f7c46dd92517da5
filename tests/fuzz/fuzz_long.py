"""The long fuzz pass (not in the default suite): `test_schemathesis.py` with more examples, then counts.

    .envs/server/bin/python tests/fuzz/fuzz_long.py --examples 200

prints the operations fuzzed, the cases sent per actor, the responses by status class and the distinct
failures (actor, operation, check), and exits non-zero if pytest failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent


class TallyReader:
    """A pytest plugin that keeps the test module's tally once the session ends."""

    def __init__(self) -> None:
        self.tally: Any = None

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        for item in session.items:
            self.tally = getattr(item.module, "TALLY", self.tally)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=200, help="examples per operation and phase (default 200)")
    args = parser.parse_args(argv)
    os.environ["ESD_FUZZ_EXAMPLES"] = str(args.examples)
    reader = TallyReader()
    started = time.monotonic()
    code = pytest.main([str(HERE / "test_schemathesis.py"), "-q", "-p", "no:cacheprovider"], plugins=[reader])
    elapsed = time.monotonic() - started
    tally = reader.tally
    if tally is None:
        print("no tally: the fuzz did not run", file=sys.stderr)
        return int(code) or 1
    operations = {label for _, label in tally.cases}
    print(f"\nfuzz: {args.examples} examples per operation and phase, {elapsed:.0f} s")
    print(f"operations: {len(operations)}")
    for actor in sorted({actor for actor, _ in tally.cases}):
        sent = sum(count for (who, _), count in tally.cases.items() if who == actor)
        print(f"cases sent as {actor}: {sent}")
    print("responses: " + ", ".join(f"{status}: {count}" for status, count in sorted(tally.statuses.items())))
    print(f"skipped (see test_schemathesis.py): {tally.skipped}")
    print(f"failures (distinct actor, operation, check): {len(tally.failures)}")
    for actor, label, title in sorted(tally.failures):
        print(f"  {actor}  {label}: {title}")
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
