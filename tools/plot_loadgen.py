"""PNG of daemon throughput from tools/loadgen.py JSON reports (optional: needs matplotlib).

* reports of ``--sweep-threads``: pages/s against ``threads`` per worker, one line per origin latency;
* plain reports (one file per setting): median pages/s against concurrency, one line per worker count,
  with the best peer of the same run when the report was made with ``--compare``.

    python tools/plot_loadgen.py out.png run-c16.json run-c64.json run-c256.json

matplotlib is not a dependency of shmfetch (not even of the bench extra); without it this prints a note and
exits 0, so scripts that call it do not fail on a machine that lacks it.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from typing import Any


def _load(paths: list[str]) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        with open(p) as fh:
            out.append(json.load(fh))
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if len(argv) < 2:
        print(__doc__)
        return 2
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on a server
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_loadgen: matplotlib is not installed; no plot written")
        return 0
    png, reports = argv[0], _load(argv[1:])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sweeps = [r for r in reports if "sweep" in r]
    if sweeps:
        series: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for rep in sweeps:
            for row in rep["sweep"]:
                for k, v in row.items():
                    if k.startswith("pages_per_s@"):
                        series[k.split("@", 1)[1]][row["threads"]].append(v)
        for lat, pts in sorted(series.items()):
            xs = sorted(pts)
            ax.plot(xs, [statistics.median(pts[x]) for x in xs], marker="o", label=f"origin latency {lat}")
        ax.set_xlabel("threads per worker")
    else:
        by_workers: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        peers: dict[int, list[float]] = defaultdict(list)
        for rep in reports:
            for rnd in rep.get("rounds", []):
                by_workers[rep["workers"]][rep["concurrency"]].append(rnd["daemon"]["pages_per_s"])
                if rnd.get("peers"):
                    peers[rep["concurrency"]].append(max(p["pages_per_s"] for p in rnd["peers"]))
        for w, pts in sorted(by_workers.items()):
            xs = sorted(pts)
            ax.plot(xs, [statistics.median(pts[x]) for x in xs], marker="o", label=f"daemon, {w} workers")
        if peers:
            xs = sorted(peers)
            ax.plot(xs, [statistics.median(peers[x]) for x in xs], marker="s", ls="--", label="best peer")
        ax.set_xlabel("requests in flight (-c)")
    ax.set_ylabel("pages/s")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
