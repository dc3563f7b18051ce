"""Fill the README's measured figures in from the benchmarks' JSON (benchmarks/results/*.json).

    python -m devtools.readme            # rewrite the block between the markers in README.md
    python -m devtools.readme --check    # exit 1 if README.md does not show what the JSON holds

The block is written from the JSON alone, so the README never carries a figure by hand.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from diffusion.cpu_speed import CPU_FLAGS

from .bench import RESULTS

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- figures:start (python -m devtools.readme) -->", "<!-- figures:end -->"
# results whose command is more than `python -m benchmarks.bench_<name>`
COMMANDS = {"lab": "python -m benchmarks.bench_lab --data-dir ../shared/data",
            "class_no_bf16": "python -m benchmarks.bench_class --app-args=--no-bf16"}


def figures_block(results: Path = RESULTS) -> str:
    """A markdown table of every bar in every benchmark result, with the machine each was measured on."""
    lines = ["| benchmark | bar | measured | limit | met |", "|---|---|---|---|---|"]
    machines = []
    for path in sorted(results.glob("*.json")):
        report = json.loads(path.read_text())
        name = report["benchmark"]
        for bar in report["bars"]:
            measured = "—" if bar["measured"] is None else f"{bar['measured']:.3g} {bar['unit']}"
            limit = f"{'≥' if bar['at_least'] else '≤'} {bar['limit']:g} {bar['unit']}"
            command = COMMANDS.get(name, f"python -m benchmarks.bench_{name}")
            lines.append(f"| `{command}` | {bar['what']} | {measured} | {limit} | "
                         f"{'yes' if bar['met'] else '**no**'} |")
        m = report["machine"]
        flags = f", flags {' '.join(m['cpu_flags']) or 'none of ' + '/'.join(CPU_FLAGS)}" if "cpu_flags" in m else ""
        machines.append(f"`{name}`: {report['date']}, {m.get('cpus')} CPUs ({m.get('cpu_model', '?')}{flags}), "
                        f"load {m.get('load_average_1min')}, torch {m.get('torch', '?')}")
    return "\n".join(lines + ["", "Measured on: " + "; ".join(machines) + "."]) if machines else "(no results yet)"


def render(readme: str, block: str) -> str:
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md has no {START} … {END} block")
    head, rest = readme.split(START, 1)
    return head + START + "\n" + block + "\n" + END + rest.split(END, 1)[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only check that README.md is up to date")
    args = p.parse_args(argv)
    current = README.read_text()
    wanted = render(current, figures_block())
    if args.check:
        if wanted != current:
            print("README.md's figures differ from benchmarks/results/*.json: run python -m devtools.readme")
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
