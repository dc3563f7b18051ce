"""MNIST Diffusion Classroom: the Gradio app's entry point.

    python app.py          # then open http://127.0.0.1:7860
    python app.py --host 0.0.0.0 --port 8080 --clip-pretrained /path/to/open_clip_model.safetensors

It reads the command line and the environment (a Hugging Face Space sets GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT or PORT), loads the checkpoints, builds the user interface (`ui/`, one module per
tab) and serves it. The diffusion maths all lives in the engine (`diffusion/`).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

from diffusion.checkpoints import DEFAULT_CLASSIFIER, DEFAULT_NOISE_CLASSIFIER, DEFAULT_UNET
SWITCH_INTERVAL_S = 0.0005


def set_environment() -> None:
    """Before gradio and huggingface_hub are imported: no analytics call at start, plots drawn off-screen."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("MPLBACKEND", "Agg")


def env_bool(name: str) -> bool | None:
    """An on/off environment variable: '1' -> True, '0' -> False, unset or anything else -> None."""
    return {"1": True, "0": False}.get(os.environ.get(name, ""))


def server_address(host: str | None, port: int | None) -> tuple[str, int]:
    """--host/--port, else $GRADIO_SERVER_NAME and $GRADIO_SERVER_PORT or $PORT (a Space sets them),
    else 127.0.0.1:7860."""
    host = host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    port = port or int(os.environ.get("GRADIO_SERVER_PORT") or os.environ.get("PORT") or 7860)
    return host, port


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="MNIST Diffusion Classroom (Gradio app)")
    p.add_argument("--host", help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: $GRADIO_SERVER_PORT, $PORT or 7860)")
    p.add_argument("--unet", default=os.environ.get("DIFFUSION_UNET", str(DEFAULT_UNET)),
                   help="diffusion checkpoint stem (default: $DIFFUSION_UNET or checkpoints/unet)")
    p.add_argument("--classifier", default=os.environ.get("DIFFUSION_CLASSIFIER", str(DEFAULT_CLASSIFIER)),
                   help="classifier checkpoint stem (default: $DIFFUSION_CLASSIFIER or checkpoints/classifier)")
    p.add_argument("--noise-classifier", default=os.environ.get("DIFFUSION_NOISE_CLASSIFIER", str(DEFAULT_NOISE_CLASSIFIER)),
                   help="noise-aware classifier checkpoint stem, for the reverse process "
                        "(default: $DIFFUSION_NOISE_CLASSIFIER or checkpoints/noise_classifier)")
    p.add_argument("--clip-model", default=os.environ.get("DIFFUSION_CLIP_MODEL"),
                   help="open_clip architecture (default: $DIFFUSION_CLIP_MODEL or ViT-B-32)")
    p.add_argument("--clip-pretrained", default=os.environ.get("DIFFUSION_CLIP_PRETRAINED"),
                   help="pretrained tag or local weights file (default: $DIFFUSION_CLIP_PRETRAINED or "
                        "laion2b_s34b_b79k)")
    p.add_argument("--device", default=os.environ.get("DIFFUSION_DEVICE", "cpu"),
                   help="where the network runs: cpu (default), cuda, cuda:N, mps, or auto: cuda, then mps, then "
                        "cpu ($DIFFUSION_DEVICE). A ZeroGPU Space needs none: the app finds its GPU")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=env_bool("DIFFUSION_BF16"),
                   help="run the network in bfloat16 (default: $DIFFUSION_BF16=0/1, else where it is faster)")
    return p.parse_args(argv)


def stop_on_sigterm() -> None:
    """A Space stops the app with SIGTERM: treat it like Ctrl-C, so the server closes and `finally` runs.
    Ctrl-C (SIGINT) is set to stop it too: a process started from a script in the background, or by a
    launcher that ignores SIGINT, inherits "ignore SIGINT", and the app would then never hear Ctrl-C."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv=None) -> None:
    args = parse_args(argv)
    set_environment()
    import ui  # gradio is imported here, after the environment is set
    from diffusion.devices import resolve_device

    try:
        resolve_device(args.device)
    except ValueError as e:
        raise SystemExit(f"app.py: {e}") from None

    # Many handler threads share one Python: hand the interpreter over sooner (default 5 ms), so the network
    # server's thread, which takes it back after every torch op, is not kept waiting by the others.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    classroom = ui.load_classroom(args.unet, args.classifier, args.clip_model, args.clip_pretrained,
                                  device=args.device, bf16=args.bf16, noise_classifier=args.noise_classifier)
    stop_on_sigterm()
    try:
        ui.launch(ui.build_app(classroom), classroom, *server_address(args.host, args.port))
    except KeyboardInterrupt:
        pass
    finally:
        classroom.close()  # the app's temporary files go with it
    sys.exit(0)


if __name__ == "__main__":
    main()
