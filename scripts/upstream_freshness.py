"""Is the backend matrix verified against each engine's latest release?

Offline (the default, used in CI): read the latest releases recorded in
docs/data/upstream/releases.yaml and flag every backend-matrix row whose `checked.version` is
older than its engine's latest release, or that has no version at all.

Online (`--online`, run by `make evidence`): ask the package index for the latest release of each
engine with `pip index versions` (nothing is downloaded or installed) and also report every engine
whose latest release differs from the recorded one. `--write` then records what the index said.

Exit status: 0 when every row is current, 1 otherwise.

Usage (from the repository root):
    python scripts/upstream_freshness.py                   # offline, from committed data
    python scripts/upstream_freshness.py --online          # ask the index, fail on drift
    python scripts/upstream_freshness.py --online --write  # record the index's answers
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import subprocess
import sys
from pathlib import Path

import yaml
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "data" / "upstream"


def load(name: str) -> dict:
    with open(DATA / f"{name}.yaml", encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def latest_on_index(package: str) -> str:
    """The newest version `pip index versions` reports for a package (no download)."""
    done = subprocess.run([sys.executable, "-m", "pip", "index", "versions", package],
                          capture_output=True, text=True, check=True)
    match = re.search(rf"^{re.escape(package)} \(([^)]+)\)", done.stdout, re.MULTILINE)
    if not match:
        raise RuntimeError(f"no version of {package} in: {done.stdout[:200]!r}")
    return match.group(1)


def stale_rows(rows: list[dict], releases: dict) -> list[str]:
    """One line per row that lacks a version or evidence, or was verified against an older release."""
    problems = []
    engines = releases["engines"]
    for row in rows:
        checked = row.get("checked") or {}
        engine = engines.get(row["system"])
        if engine is None:
            problems.append(f"{row['id']}: no release recorded for engine {row['system']}")
            continue
        if not checked.get("version") or not checked.get("date"):
            problems.append(f"{row['id']}: no verified version and date")
            continue
        if not row.get("evidence"):
            problems.append(f"{row['id']}: no evidence")
        if Version(checked["version"]) < Version(engine["latest"]):
            problems.append(f"{row['id']}: verified against {row['system']} {checked['version']}, "
                            f"latest is {engine['latest']}")
        elif Version(checked["version"]) > Version(engine["latest"]):
            problems.append(f"{row['id']}: verified against {checked['version']}, newer than the "
                            f"recorded latest {engine['latest']}")
    return problems


def per_engine(rows: list[dict]) -> dict[str, tuple[str, str]]:
    """Engine -> (oldest version, latest date) its rows were verified against."""
    out: dict[str, tuple[str, str]] = {}
    for row in rows:
        version, date = row["checked"]["version"], row["checked"]["date"]
        if row["system"] not in out:
            out[row["system"]] = (version, date)
        else:
            v, d = out[row["system"]]
            out[row["system"]] = (min(v, version, key=Version), max(d, date))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--online", action="store_true", help="ask the package index (pip index versions)")
    parser.add_argument("--write", action="store_true", help="with --online: record the answers")
    args = parser.parse_args(argv)
    releases = load("releases")
    rows = load("backends")["rows"]
    problems = []
    if args.online:
        for name, engine in releases["engines"].items():
            latest = latest_on_index(engine["package"])
            mark = "" if latest == engine["latest"] else f"  (recorded {engine['latest']})"
            print(f"{name:13s} {engine['package']:18s} latest {latest}{mark}")
            if latest != engine["latest"]:
                problems.append(f"{name}: {engine['package']} {latest} is out, data records {engine['latest']}")
                engine["latest"] = latest
        if args.write:
            releases["checked"] = dt.date.today().isoformat()
            text = (DATA / "releases.yaml").read_text(encoding="utf-8")
            for engine in releases["engines"].values():
                text = re.sub(rf'(package: {re.escape(engine["package"])}[,\n]\s*latest: )"[^"]+"',
                              rf'\g<1>"{engine["latest"]}"', text)
            text = re.sub(r'^checked: "[^"]+"', f'checked: "{releases["checked"]}"', text, flags=re.MULTILINE)
            (DATA / "releases.yaml").write_text(text, encoding="utf-8")
            problems = []
    for name, repo in releases.get("repositories", {}).items():
        print(f"{name:13s} no package on the index: tag {repo['release']} ({repo['date']}), "
              f"read {repo['read']}; not checked here")
    for name, (version, date) in sorted(per_engine(rows).items()):
        print(f"{name:13s} rows verified against {version} on {date}")
    problems += stale_rows(rows, releases)
    for p in problems:
        print("STALE:", p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
