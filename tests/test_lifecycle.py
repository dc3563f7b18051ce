"""`python app.py` as a Space runs it: its temporary folder exists while it serves and is gone once it
is stopped, by SIGTERM (how a Space stops it) or by Ctrl-C (SIGINT)."""
import signal

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
