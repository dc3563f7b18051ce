"""Write what a Hugging Face Space needs, and nothing else:

    python -m devtools.space DIR                      # a ZeroGPU Space (free accounts: the only kind they get)
    python -m devtools.space DIR --hardware cpu-basic # a CPU Basic Space (a paid plan)

Then push DIR to the Space's git repository. DIR gets the app (app.py, the `diffusion` and `ui` packages),
requirements.txt, the checkpoints the app loads, and README.md with the Space's front matter. It leaves out
what only training, testing and measuring need: training states (--resume), sample grids and loss plots of
training runs, checkpoints the app does not load (the teacher, the few-step student in training), tests,
benchmarks and the developer tools. A Space refuses plain files over 10 MB: any such file gets a Git LFS rule
in DIR/.gitattributes (none does today).
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP_FILES = ("app.py", "requirements.txt")
PACKAGES = ("diffusion", "ui")
CHECKPOINTS = "checkpoints"
LEFT_OUT = tuple(re.compile(pattern) for pattern in (   # paths relative to the repo
    r"\.train_state\.",                                  # what --resume needs
    r"_logs/[^/]*\.png$",                                 # sample grids and loss plots of training runs
    r"^checkpoints/ablations/[^/.]+\.safetensors$",       # the ablations' float32 weights (the app loads .fp16)
    r"^checkpoints/unet_teacher",                         # the shipped network's teacher (its config's summary
                                                          # is in the shipped network's own config)
    r"^checkpoints/student",                              # the few-step student, while it trains
    r"(^|/)__pycache__/|\.pyc$",
))
MAX_PLAIN_BYTES = 10_000_000
HARDWARE = {"zerogpu": "zero-a10g", "cpu-basic": "cpu-basic"}
ZEROGPU_PYTHON = "3.10.13"  # the Python version Hugging Face documents for ZeroGPU Spaces


def left_out(relative: str) -> bool:
    """Whether a path relative to the repo stays out of the bundle (see LEFT_OUT)."""
    return any(pattern.search(relative) for pattern in LEFT_OUT)


def bundle_files(root: Path = ROOT) -> list[str]:
    """Every file of the bundle, relative to the repo, sorted (README.md is written, not copied)."""
    files = [name for name in APP_FILES]
    for folder in (*PACKAGES, CHECKPOINTS):
        files += [str(p.relative_to(root)) for p in (root / folder).rglob("*") if p.is_file()]
    return sorted(f for f in files if not left_out(f))


def front_matter(readme: str, hardware: str) -> str:
    """The repo's README with its front matter set for `hardware` (see HARDWARE)."""
    match = re.match(r"---\n(.*?)\n---\n", readme, re.DOTALL)
    if match is None:
        raise ValueError("README.md has no front matter (--- … ---) to start from")
    lines = [line for line in match.group(1).splitlines()
             if not line.startswith(("suggested_hardware:", "python_version:"))]
    lines.append(f"suggested_hardware: {HARDWARE[hardware]}")
    if hardware == "zerogpu":
        lines.append(f'python_version: "{ZEROGPU_PYTHON}"')
    return "---\n" + "\n".join(lines) + "\n---\n" + readme[match.end():]


def write_bundle(out: Path, hardware: str = "zerogpu", root: Path = ROOT) -> list[str]:
    """Write the bundle into `out` (which must be empty or absent); returns its files, relative to `out`."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty: give a new or empty folder")
    if hardware not in HARDWARE:
        raise ValueError(f"unknown hardware {hardware!r}: use {' or '.join(HARDWARE)}")
    files = bundle_files(root)
    for name in files:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, out / name)
    (out / "README.md").write_text(front_matter((root / "README.md").read_text(), hardware))
    large = [name for name in files if (out / name).stat().st_size > MAX_PLAIN_BYTES]
    if large:
        (out / ".gitattributes").write_text("".join(f"{name} filter=lfs diff=lfs merge=lfs -text\n" for name in large))
    return sorted([*files, "README.md"] + ([".gitattributes"] if large else []))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="a new or empty folder")
    p.add_argument("--hardware", choices=tuple(HARDWARE), default="zerogpu")
    args = p.parse_args(argv)
    try:
        files = write_bundle(args.out, args.hardware)
    except ValueError as e:
        print(f"devtools.space: {e}", file=sys.stderr)
        return 2
    size = sum((args.out / f).stat().st_size for f in files)
    print(f"wrote {len(files)} files ({size / 2**20:.1f} MB) to {args.out} for a {args.hardware} Space; "
          f"push that folder to the Space's git repository")
    return 0


if __name__ == "__main__":
    sys.exit(main())
