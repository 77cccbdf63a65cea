"""``python -m stream_app.dashboards [--check]``: regenerate the Grafana provisioning
files, or (``--check``) exit 1 listing the committed ones that are out of date."""

from __future__ import annotations

import sys

from stream_app.dashboards.generate import stale, write


def main(argv: list[str]) -> int:
    if "--check" in argv:
        out_of_date = stale()
        for path in out_of_date:
            print(f"out of date: {path} (run `python -m stream_app.dashboards`)")
        return 1 if out_of_date else 0
    for path in write():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
