"""The Space bundle (devtools/space.py): exactly what a Space needs, every file small enough, and the app starts
from it and answers the endpoints that read its checkpoint files."""
import subprocess
import sys

import pytest

from devtools.class_client import Student
from devtools.servers import ROOT, free_port, start_app, stop
from devtools.space import MAX_PLAIN_BYTES, front_matter, write_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("space")
    return out, write_bundle(out)


def test_the_bundle_has_the_app_and_leaves_out_training_and_testing(bundle):
    out, files = bundle
    assert {"app.py", "requirements.txt", "README.md", "ui/__init__.py", "diffusion/pipeline.py", "ui/player.js",
            "checkpoints/unet.safetensors", "checkpoints/classifier.safetensors",
            "checkpoints/noise_classifier.safetensors", "checkpoints/ablations/reference.fp16.safetensors",
            "diffusion/assets/mnist_test_digits.npz"} <= set(files)
    assert not [f for f in files if ".train_state." in f or f.startswith(("tests/", "benchmarks/", "devtools/"))
                or f.endswith((".pyc", ".png")) or f.startswith(("checkpoints/unet_teacher", "checkpoints/student"))]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == files
    assert all((out / f).stat().st_size <= MAX_PLAIN_BYTES for f in files)  # so no LFS rule is needed
    assert not (out / ".gitattributes").exists()


def test_the_readme_front_matter_asks_for_zerogpu_or_cpu_basic(bundle):
    out, _ = bundle
    head = (out / "README.md").read_text().split("---\n")[1]
    assert "app_file: app.py" in head and "suggested_hardware: zero-a10g" in head and 'python_version: "3.10.13"' in head
    cpu = front_matter((ROOT / "README.md").read_text(), "cpu-basic").split("---\n")[1]
    assert "suggested_hardware: cpu-basic" in cpu and "python_version" not in cpu


def test_a_bundle_refuses_a_folder_that_is_not_empty(bundle):
    out, _ = bundle
    result = subprocess.run([sys.executable, "-m", "devtools.space", str(out)], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "is not empty" in result.stderr


def test_the_app_starts_from_the_bundle_and_reads_its_files(bundle):
    out, _ = bundle
    port = free_port()
    process, _ = start_app(port, root=out)
    try:
        student = Student(f"http://127.0.0.1:{port}/", "192.0.2.1")
        for api_name, values in (("generate", {"digit": "3", "seed": 1}), ("reverse_process", {"digit": "7"}),
                                 ("training_snapshots", {}), ("compare_architectures", {}), ("difficulty", {})):
            result = student.call(api_name, values)
            assert result["ok"] and not result["failed_fetches"], (api_name, result["error"])
    finally:
        assert stop(process) == 0


def test_every_file_the_repo_tracks_is_under_10_mb_or_has_an_lfs_rule():
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    large = [name.decode() for name in tracked if name and (ROOT / name.decode()).is_file()
             and (ROOT / name.decode()).stat().st_size > MAX_PLAIN_BYTES]
    rules = subprocess.run(["git", "check-attr", "filter", "--", *large], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout if large else ""
    assert [line for line in rules.splitlines() if not line.endswith(": lfs")] == []
