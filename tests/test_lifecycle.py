"""`python app.py` as a Space runs it: its temporary folder exists while it serves and is gone once it
is stopped, by SIGTERM (how a Space stops it) or by Ctrl-C (SIGINT)."""
import signal
from pathlib import Path

import pytest

from devtools.servers import free_port, start_app, stop


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_the_app_removes_its_temporary_folder(tmp_path, sig):
    (tmp_path / "tmp").mkdir()
    process, _ = start_app(free_port(), extra_env={"TMPDIR": str(tmp_path / "tmp")})
    try:
        work = list((tmp_path / "tmp").glob("mnist-diffusion-app-*"))
        assert len(work) == 1 and work[0].is_dir()  # the app's folder, where it writes GIFs and plots
    finally:
        code = stop(process, sig)
    assert code == 0
    assert not work[0].exists()


def test_ctrl_c_stops_the_app_even_if_its_launcher_ignored_sigint(tmp_path):
    """A child inherits "ignore SIGINT" from its parent (a background job, some test runners); the app must still
    stop on SIGINT and clean up."""
    import subprocess
    import sys

    script = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN);"  # python -c imports from its cwd
        "from devtools.servers import free_port, start_app, stop;"
        f"p, _ = start_app(free_port(), extra_env={{'TMPDIR': {str(tmp_path)!r}}});"
        "sys.exit(stop(p, signal.SIGINT))")
    assert subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parent.parent,
                          timeout=120).returncode == 0
    assert not list(tmp_path.glob("mnist-diffusion-app-*"))
