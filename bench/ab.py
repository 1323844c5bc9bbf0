"""Two trees of cobox, alternately, through the same ``bench/folder.py`` case: is a change faster?

    python bench/ab.py OTHER_TREE [--rounds 5] [--env NAME=VALUE ...] [--env-other NAME=VALUE ...]
                       -- [bench/folder.py arguments, e.g. --big-mb 256 --small 0]

The two trees are this checkout ("base") and ``OTHER_TREE`` (for example a ``git worktree`` of a
branch: "other"). Each round runs ``bench/folder.py --rounds 1 --syncthing no ARGS`` once from
each tree, the daemons importing that tree (``PYTHONPATH``), base first in odd rounds and other
first in even ones, so both sides see the same minutes of a machine whose speed drifts. Run to
run, the same code differs by 10-15 % here: compare medians of 5 rounds or more, not one run.
``--env`` / ``--env-other`` set variables for one side only (an experiment's switch). Names that
start with ``COBOX_`` never reach the daemons: ``tests/integration/daemons.env`` drops them.

Prints each run's figures as they come (stderr), then one JSON line per case
(``bench: "folder-ab"``): for each side, the medians of ``seconds_to_converge``, ``a_cpu_s`` and
``b_cpu_s``, the largest peak RSS, every run's seconds, and ``ratio`` (base seconds / other
seconds: above 1, the other tree is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIGURES = ("seconds_to_converge", "a_cpu_s", "b_cpu_s")


def parse_env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--env takes NAME=VALUE, not {pair!r}")
        if name.startswith("COBOX_"):
            raise SystemExit(f"{name}: the bench's daemons never see COBOX_* variables; name it otherwise")
        out[name] = value
    return out


def run(tree: Path, extra_env: dict[str, str], args: list[str]) -> list[dict[str, object]]:
    """One ``bench/folder.py`` run from ``tree``: its ``bench: "folder"`` rows."""
    env = {**os.environ, **extra_env, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(tree / "bench" / "folder.py"), "--rounds", "1", "--syncthing", "no", *args]
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: bench/folder.py failed ({done.returncode}):\n{done.stderr[-2000:]}")
    rows = []
    for line in done.stdout.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("bench") == "folder":
            rows.append(row)
    return rows


def figure(row: dict[str, object], key: str) -> float | None:
    value = row.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def medians(rows: list[dict[str, object]]) -> dict[str, float]:
    """The median of each of ``FIGURES`` over one side's runs of one case."""
    out = {}
    for key in FIGURES:
        values = [v for v in (figure(r, key) for r in rows) if v is not None]
        if values:
            out[key] = round(statistics.median(values), 2)
    return out


def summary(rows: list[dict[str, object]]) -> dict[str, object]:
    """One side's runs of one case: the medians, the largest peak RSS, every run's seconds."""
    out: dict[str, object] = dict(medians(rows))
    out["peak_rss_mb"] = max(figure(r, k) or 0.0 for r in rows for k in ("a_peak_rss_mb", "b_peak_rss_mb"))
    out["runs"] = [figure(r, "seconds_to_converge") for r in rows]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("other", type=Path, help="the other tree (a checkout with its own bench/folder.py)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE for this checkout's runs")
    p.add_argument("--env-other", action="append", default=[], help="NAME=VALUE for the other tree's runs")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, folder_args = p.parse_args(argv[:cut]), argv[cut + 1:]  # after --: bench/folder.py's own
    fixed = [a for a in folder_args if a.split("=")[0] in ("--rounds", "--syncthing")]
    if fixed:
        raise SystemExit(f"{fixed[0]}: ab.py runs bench/folder.py with --rounds 1 --syncthing no itself")
    other = args.other.resolve()
    if not (other / "bench" / "folder.py").is_file():
        raise SystemExit(f"{other} has no bench/folder.py")
    sides = {"base": (REPO, parse_env(args.env)), "other": (other, parse_env(args.env_other))}
    rows: dict[tuple[str, str], list[dict[str, object]]] = {}
    for k in range(args.rounds):
        for side in ("base", "other") if k % 2 == 0 else ("other", "base"):
            tree, env = sides[side]
            for row in run(tree, env, folder_args):
                rows.setdefault((str(row["case"]), side), []).append(row)
                print(f"round {k + 1} {side:5} {row['case']}: {row['seconds_to_converge']} s, CPU A "
                      f"{row.get('a_cpu_s')} B {row.get('b_cpu_s')} s", file=sys.stderr, flush=True)
    for case in dict.fromkeys(c for c, _ in rows):
        base, oth = rows.get((case, "base"), []), rows.get((case, "other"), [])
        if not base or not oth:
            continue
        b, o = medians(base).get("seconds_to_converge"), medians(oth).get("seconds_to_converge")
        ratio = round(b / o, 2) if b and o else None
        print(json.dumps(dict(bench="folder-ab", case=case, rounds=len(base), base=summary(base),
                              other=summary(oth), ratio=ratio)), flush=True)


if __name__ == "__main__":
    main()
