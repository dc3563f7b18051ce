"""Shared test set-up: no network, few threads, every temporary file inside the repo's ignored
test-artifacts/ (so a test run leaves nothing in /tmp), and the small models the tests share."""
import os
import tempfile
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TMP = ARTIFACTS / "tmp"
TMP.mkdir(parents=True, exist_ok=True)
# Before anything asks where temporary files go: pytest's tmp_path, gradio's uploads, gradio_client's
# downloads, the app's work folder, torchrun and chromium all follow TMPDIR (subprocesses inherit it).
os.environ["TMPDIR"] = str(TMP)
tempfile.tempdir = None
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # must precede any huggingface_hub import
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


TINY_T = 50  # T of the tiny test networks


def tiny_config(schedule: str = "linear") -> dict:
    """A checkpoint config for a very small U-Net (fast enough for sampling-loop tests)."""
    return {
        "kind": "diffusion-unet",
        "architecture": {"channels": [8, 16, 16], "attention_heads": 2, "embedding_dim": 32, "groups": 4},
        "schedule": {"name": schedule, "num_train_steps": TINY_T, "beta_start": 1e-4, "beta_end": 0.02},
    }


@pytest.fixture
def tiny_unet_config() -> dict:
    return tiny_config()


@pytest.fixture(scope="module")
def tiny_random_pipe():
    """A tiny U-Net with every weight non-zero (so its outputs depend on x, t, label and w), cosine schedule."""
    from diffusion.model import build_unet
    from diffusion.pipeline import DigitDiffusion
    from diffusion.schedules import NoiseSchedule

    config = tiny_config("cosine")
    torch.manual_seed(0)
    model = build_unet(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return DigitDiffusion(model, NoiseSchedule.from_config(config["schedule"]), config)


@pytest.fixture(scope="session")
def tiny_clip_weights(tmp_path_factory) -> str:
    """The tiny CLIP architecture, registered with open_clip, and its random weights (safetensors)."""
    from tiny_clip import save_tiny_clip_weights

    return save_tiny_clip_weights(tmp_path_factory.mktemp("tiny_clip"))


# --- the app, launched in this process on a free port of 127.0.0.1 ------------------------------------------

MISSING_CLIP = "/nonexistent/open_clip_model.safetensors"


def launch_classroom(classroom):
    """Build and launch the app on a free port of 127.0.0.1; returns (demo, url)."""
    import ui
    from devtools.servers import free_port

    demo = ui.build_app(classroom)
    port = free_port()
    ui.launch(demo, classroom, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    return demo, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def classroom():
    """The shipped checkpoints; CLIP pointed at a missing file, so it is unavailable at once."""
    import ui
    from diffusion.classifier import DEFAULT_CLASSIFIER
    from diffusion.pipeline import DEFAULT_UNET

    classroom = ui.load_classroom(str(DEFAULT_UNET), str(DEFAULT_CLASSIFIER), None, MISSING_CLIP)
    yield classroom
    classroom.close()


@pytest.fixture(scope="module")
def url(classroom):
    demo, url = launch_classroom(classroom)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


# --- the app in a real browser (see tests/browser_app.py) ---------------------------------------------------

@pytest.fixture(scope="module")
def app_url(request):
    """`python app.py` started as a Space starts it, for one test module (log: test-artifacts/app-<module>.log)."""
    from browser_app import running_app

    with running_app("app-" + request.module.__name__.removeprefix("test_")) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from browser_app import chromium

    with chromium() as browser:
        yield browser
