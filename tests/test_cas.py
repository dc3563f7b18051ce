"""The Classification Accuracy Score (`python -m diffusion.evaluate --cas N`) on tiny synthetic data, no MNIST."""
import json

import numpy as np
import pytest
import torch

from diffusion import evaluate
from diffusion.checkpoints import save_checkpoint
from diffusion.data import synthetic_digits
from diffusion.model import build_unet

_x, _y = synthetic_digits(200)
BARS = torch.stack([_x[_y == c][0] for c in range(10)])  # uint8 [10,28,28]: the bar of each class


def bars(labels) -> np.ndarray:
    """A stub generator: a perfect synthetic digit of each label, uint8 [N,28,28]."""
    return BARS[torch.as_tensor(labels)].numpy()


def test_cas_measures_each_classifier_on_the_given_test_set():
    """A stub generator that draws every digit as the next one: the classifier trained on its digits alone must
    fail on the real (here: synthetic) test set, where the one trained on real bars succeeds."""
    real_x, real_y = synthetic_digits(1000, seed=1)
    test_x, test_y = synthetic_digits(300, seed=2)
    report = evaluate.classification_accuracy_score(lambda labels: bars([(c + 1) % 10 for c in labels]), real_x,
                                                    real_y, test_x, test_y, n=100, epochs=6, seed=0, batch_size=10)
    acc = {r["data"]: r["test_accuracy"] for r in report["results"]}
    assert (report["n"], report["epochs"], report["seed"]) == (100, 6, 0)
    assert [(r["data"], r["images"]) for r in report["results"]] == [("generated", 100), ("real", 100),
                                                                     ("real+generated", 200)]
    assert all(0 <= a <= 1 for a in acc.values()) and all(r["seconds"] > 0 for r in report["results"])
    assert acc["generated"] <= 0.2 < 0.9 <= acc["real"]
    # accuracies are fractions of the 300 test digits
    assert all(abs(a * 300 - round(a * 300)) < 1e-3 for a in acc.values())


def test_cas_command_line_writes_table_and_json(tmp_path, monkeypatch, tiny_unet_config, capsys):
    save_checkpoint(tmp_path / "unet", build_unet(tiny_unet_config).state_dict(), tiny_unet_config)
    monkeypatch.setattr(evaluate, "load_mnist", lambda data_dir, train: synthetic_digits(300 if train else 50, int(train)))
    out = tmp_path / "cas"
    evaluate.main(["--cas", "20", "--cas-epochs", "1", "--checkpoint", str(tmp_path / "unet"), "--out", str(out)])
    report = json.loads((tmp_path / "cas.json").read_text())
    assert (report["n"], report["epochs"], report["generation"]["sampler"]) == (20, 1, evaluate.DEFAULT_SAMPLER)
    assert (report["generation"]["steps"], report["generation"]["guidance"]) == (evaluate.DEFAULT_STEPS,
                                                                                 evaluate.DEFAULT_GUIDANCE)
    assert [r["images"] for r in report["results"]] == [20, 20, 40]
    assert all(0 <= r["test_accuracy"] <= 1 for r in report["results"])
    table = (tmp_path / "cas.md").read_text()
    assert table.count("\n| ") == 4 and "| generated | 20 |" in table and "Bar: generated only ≥ 97%" in table
    assert table in capsys.readouterr().out
    with pytest.raises(SystemExit):
        evaluate.main(["--cas", "15", "--checkpoint", str(tmp_path / "unet"), "--out", str(out)])
