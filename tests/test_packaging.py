"""The repo is an installable package: a wheel builds, and it carries the code, the data files the
code reads and the console scripts."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_wheel_builds_with_the_engine_the_ui_and_the_console_scripts(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    [wheel] = tmp_path.glob("mnist_diffusion_classroom-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        scripts = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    for module in ("schedules", "model", "sampling", "requests", "train", "evaluate", "scoring", "pipeline"):
        assert f"diffusion/{module}.py" in names
    assert {"diffusion/assets/mnist_test_digits.npz", "ui/how_it_works.md", "ui/generate.py"} <= names
    for command in ("sample", "train", "evaluate", "classifier", "scoring"):
        assert f"diffusion-{command} = diffusion.{command}:main" in scripts


def test_no_module_reaches_into_sys_path():
    """The benchmarks and tests import the installed (or checked-out) package, never by editing sys.path."""
    offenders = [str(p.relative_to(ROOT)) for folder in ("benchmarks", "tests", "diffusion", "ui", "devtools")
                 for p in (ROOT / folder).glob("*.py") if "sys.path.insert" in p.read_text() and p.name != Path(__file__).name]
    assert offenders == []


def test_the_readme_shows_the_figures_the_benchmarks_wrote():
    from devtools.readme import main as readme

    assert readme(["--check"]) == 0, "run: python -m devtools.readme"
