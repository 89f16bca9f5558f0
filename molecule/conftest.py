"""The verifiers' failures, one line each, in build/molecule_failures.txt: `make molecule` prints
that file last when a scenario fails, since CI keeps only the tail of the output."""

from pathlib import Path

FAILURES = Path(__file__).resolve().parent.parent / "build" / "molecule_failures.txt"


def pytest_runtest_logreport(report):
    if report.failed:
        message = report.longreprtext.strip().splitlines()
        reason = next((line[1:].strip() for line in message if line.startswith("E ")), message[-1] if message else "")
        FAILURES.parent.mkdir(exist_ok=True)
        with FAILURES.open("a") as out:
            out.write(f"{report.nodeid} ({report.when}): {reason[:1500]}\n")
