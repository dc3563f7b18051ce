"""The Architecture tab and the ablations behind it: the 16-bit checkpoints, the evaluation table, the U-Net
diagram against the network the config builds, and /compare_architectures through gradio_client against the
launched app (defaults, values, bad input), checked against the engine."""
import json

import numpy as np
import pytest
import torch
from gradio_client import Client
from matplotlib.text import Text
from PIL import Image

from diffusion.ablations import (ABLATION_DIR, REPORT, VARIANTS, final_losses, load_variant, markdown, read_report,
                                 variant_stem)
from diffusion.checkpoints import checkpoint_paths, read_config, read_tensors
from diffusion.model import ClassConditionalUNet, SelfAttention, UNetConfig, count_parameters
from diffusion.pipeline import DEFAULT_UNET
from diffusion.requests import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS, check_sampling_request
from diffusion.scoring import classifier_scores
from ui import settings
from ui.architecture import ArchitectureTab, diagram_figure, explanation, frame_steps, tile_position, unet_layout

SCALE = settings.ARCHITECTURE_TILE_SCALE
MB15 = 15 * 1024 * 1024


def read_image(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


def tile(picture: np.ndarray, r: int, c: int, **layout) -> np.ndarray:
    """Tile (r, c) of a picture_table picture, back at 28×28."""
    top, left = tile_position(r, c, **layout)
    return picture[top:top + 28 * SCALE:SCALE, left:left + 28 * SCALE:SCALE]


# --- the shipped ablations ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_variant_ships_in_float16_beside_what_resume_needs(name):
    weights, config_path = checkpoint_paths(variant_stem(name))
    assert weights.name == f"{name}.fp16.safetensors" and config_path.is_file()
    halves, full = read_tensors(variant_stem(name)), read_tensors(ABLATION_DIR / name)
    assert set(halves) == set(full) and all(v.dtype == torch.float16 for v in halves.values())
    assert all(torch.equal(halves[k], full[k].to(torch.float16)) for k in full)  # the float32 EMA, rounded
    config = read_config(variant_stem(name))
    assert config["architecture"] == read_config(ABLATION_DIR / name)["architecture"]
    assert config["weights"] == {"dtype": "float16", "from": f"{name}.safetensors"}
    resume = [*checkpoint_paths(ABLATION_DIR / name), *checkpoint_paths(ABLATION_DIR / f"{name}.train_state")]
    for path in [weights, *resume]:
        assert path.is_file() and path.stat().st_size <= MB15, path
    pipe = load_variant(name, bf16=False)
    assert next(pipe.model.parameters()).dtype == torch.float32
    switched_off = {"no_skip_connections": ("skip_connections", False), "no_time_embedding": ("time_embedding", False),
                    "no_attention": ("attention_heads", 0)}.get(name)
    if switched_off:
        assert getattr(pipe.model.config, switched_off[0]) == switched_off[1]


def test_the_table_is_the_evaluation_reports_and_its_losses_are_the_logs():
    report = read_report()
    assert report, "checkpoints/ablations.json is missing: run python -m diffusion.ablations evaluate"
    assert (REPORT.parent / "ablations.md").read_text() == markdown(report)
    assert [r["name"] for r in report["variants"]] == list(VARIANTS)
    assert report["per_class"] == 200
    for r in report["variants"]:
        assert r["samples"] == 2000 and len(r["per_digit_accuracy"]) == 10
        assert {k: r[k] for k in ("epoch", "step", "train_loss", "heldout_loss")} == final_losses(r["name"])
        assert r["parameters"] == count_parameters(load_variant(r["name"]).model)
        assert r["settings"]["sampler"] == DEFAULT_SAMPLER and r["settings"]["steps"] == DEFAULT_STEPS
        assert r["settings"]["guidance"] == DEFAULT_GUIDANCE
        assert r["settings"]["network_evals_per_sample"] == 2 * DEFAULT_STEPS  # no guidance head: two passes
        assert r["worst_digit_accuracy"] == min(r["per_digit_accuracy"]) <= r["accuracy"]
        assert r["fd_over_floor"] == pytest.approx(r["fd"] / report["floor"]["fd"])
    heldout = {r["name"]: r["heldout_loss"] for r in report["variants"]}
    assert heldout["no_skip_connections"] > heldout["reference"]


# --- the diagram -----------------------------------------------------------------------------------------------

def traced_shapes(model: ClassConditionalUNet) -> dict:
    """The output shape [C, H, W] of every down block, up block and the bottleneck, from a real forward pass."""
    modules = [(("down", i), blocks[-1]) for i, blocks in enumerate(model.down_blocks)]  # before downsampling
    modules += [(("up", k), block) for k, block in enumerate(model.up_blocks)]             # before upsampling
    modules.append((("mid",), model.mid_block))
    shapes = {}
    hooks = [module.register_forward_hook(lambda m, args, out, key=key: shapes.__setitem__(key, tuple(out.shape[1:])))
             for key, module in modules]
    with torch.inference_mode():
        model(torch.zeros(1, 1, 28, 28), torch.ones(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    for h in hooks:
        h.remove()
    return shapes


CONFIGS = {"shipped": None, "no skips": {"skip_connections": False}, "no attention": {"attention_heads": 0},
           "no t": {"time_embedding": False}, "wider": {"channels": (16, 32, 64), "blocks_per_level": 2}}


@pytest.mark.parametrize("changes", CONFIGS.values(), ids=CONFIGS.keys())
def test_the_diagram_describes_the_network_its_config_builds(changes):
    shipped = UNetConfig(**read_config(DEFAULT_UNET)["architecture"])
    config = UNetConfig(**{**shipped.to_dict(), **(changes or {})})
    layout, model = unet_layout(config), ClassConditionalUNet(config)
    shapes = traced_shapes(model)
    assert [e["channels"] for e in layout["encoder"]] == list(config.channels)
    for e in layout["encoder"]:
        assert shapes[("down", e["level"])] == (e["channels"], e["resolution"], e["resolution"])
        assert model.down_blocks[e["level"]][0].conv1.in_channels == e["in_channels"]
        assert len(model.down_blocks[e["level"]]) == e["blocks"]
    for k, d in enumerate(layout["decoder"]):  # deepest first, as the network runs them
        assert shapes[("up", k)] == (d["channels"], d["resolution"], d["resolution"])
        assert model.up_blocks[k].conv1.in_channels == d["in_channels"] + d["skip_channels"]
        assert (d["attention_heads"] > 0) == (k == 0 and isinstance(model.up_attention, SelfAttention))
    mid = layout["bottleneck"]
    assert shapes[("mid",)] == (mid["channels"], mid["resolution"], mid["resolution"])
    assert isinstance(model.mid_attention, SelfAttention) == (mid["attention_heads"] > 0)
    if config.attention_heads:
        assert model.mid_attention.heads == mid["attention_heads"] == config.attention_heads
    levels = range(len(config.channels))
    assert layout["skips"] == ([{"from_encoder_level": i, "to_decoder_level": i, "channels": config.channels[i]}
                                for i in levels] if config.skip_connections else [])
    assert layout["embedding"] == {"dim": config.embedding_dim, "time": config.time_embedding,
                                   "classes": config.num_classes}
    assert (model.time_mlp is not None) == config.time_embedding
    assert layout["output_channels"] == model.head[-1].out_channels

    # … and the drawing shows exactly that, in type of at least 12 pt
    texts = [t for t in diagram_figure(layout).findobj(Text) if t.get_text()]
    assert all(t.get_fontsize() >= 12 for t in texts)
    drawn = "\n".join(t.get_text() for t in texts)
    for e in layout["encoder"]:
        assert f"encoder level {e['level']}: {e['resolution']}×{e['resolution']}" in drawn
        assert f"{e['in_channels']} → {e['channels']} ch" in drawn
    for d in layout["decoder"]:
        into = f"{d['in_channels']} + {d['skip_channels']}" if d["skip_channels"] else f"{d['in_channels']}"
        assert f"decoder level {d['level']}: {d['resolution']}×{d['resolution']}\nresidual block: {into} → " \
               f"{d['channels']} ch" in drawn
    assert drawn.count("skip: concatenate") == len(layout["skips"])
    for s in layout["skips"]:
        assert f"skip: concatenate {s['channels']} ch" in drawn
    assert ("no skip connections" in drawn) == (not config.skip_connections)
    assert drawn.count(f"self-attention ({config.attention_heads} heads)") == (2 if config.attention_heads else 0)
    assert (f"t → sinusoids → MLP ({config.embedding_dim})" in drawn) == config.time_embedding
    assert f"label → one-hot ({config.num_classes})" in drawn
    assert drawn.count("◆") == 1 + len(config.channels) * 2 + 1  # the legend, every level twice, the bottleneck


def test_how_it_works_points_to_the_generated_diagram_instead_of_ascii_art(classroom):
    from ui.how_it_works import how_it_works_markdown

    text = how_it_works_markdown(classroom)
    assert "**Architecture** tab draws this network's U-Net from its config" in text
    assert "─" not in text and "└" not in text and "```" not in text


# --- the endpoint ----------------------------------------------------------------------------------------------

def test_the_endpoint_is_named_and_every_parameter_has_a_default(client: Client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    parameters = {p["parameter_name"]: p["parameter_default"]
                  for p in endpoints["/compare_architectures"]["parameters"]}
    assert parameters == {"digits": settings.ARCHITECTURE_DIGITS, "reverse_digit": settings.DEFAULT_REVERSE_DIGIT,
                          "sampler": DEFAULT_SAMPLER, "steps": DEFAULT_STEPS, "guidance": DEFAULT_GUIDANCE, "seed": 0}


def check_against_the_engine(samples_png, reverse_png, classroom, digits, follow, **settings_):
    """Every variant's samples and the followed sample's last frames are the engine's, tile for tile."""
    samples, reverse = read_image(samples_png), read_image(reverse_png)
    assert min(samples.shape) >= 240 and min(reverse.shape) >= 240
    frames = len(frame_steps(settings_["num_inference_steps"]))
    index = digits.index(follow)
    for r, name in enumerate(VARIANTS):
        expected = load_variant(name).generate(digits, **settings_)
        for c in range(len(digits)):
            got = tile(samples, r, c, notes=True)
            assert np.abs(got.astype(int) - expected[c]).max() <= 1, (name, c)
        last_x_t = tile(reverse, r, 2 * frames - 2, header_lines=2, group=2, subheaders=True)
        assert np.abs(last_x_t.astype(int) - expected[index]).max() <= 1, name
    return samples, reverse


def test_defaults_show_every_variant_drawing_the_same_noise(client, classroom):
    samples_png, reverse_png, caption = client.predict(api_name="/compare_architectures")
    digits = [int(d) for d in settings.ARCHITECTURE_DIGITS]
    _, reverse = check_against_the_engine(samples_png, reverse_png, classroom, digits,
                                          int(settings.DEFAULT_REVERSE_DIGIT), seed=0, num_inference_steps=DEFAULT_STEPS,
                                          guidance=DEFAULT_GUIDANCE, sampler=DEFAULT_SAMPLER)
    assert f"{DEFAULT_SAMPLER}, {DEFAULT_STEPS} steps, w = {DEFAULT_GUIDANCE:g}, seed 0" in caption
    assert f"the first {settings.DEFAULT_REVERSE_DIGIT}" in caption
    # one step in, each network has made its own guess x̂₀: with and without skip connections, clearly different
    first_guess = [tile(reverse, r, 1, header_lines=2, group=2, subheaders=True) for r in range(len(VARIANTS))]
    assert np.abs(first_guess[0].astype(int) - first_guess[1]).mean() > 5


def test_values_are_used_and_the_classifier_reads_each_sample(client, classroom):
    values = {"digits": "7, 7, 1, 4", "reverse_digit": 4, "sampler": "ddim", "steps": 8, "guidance": 1.0, "seed": 5}
    samples_png, reverse_png, caption = client.predict(api_name="/compare_architectures", **values)
    samples, _ = check_against_the_engine(samples_png, reverse_png, classroom, [7, 7, 1, 4], 4, seed=5,
                                          num_inference_steps=8, guidance=1.0, sampler="ddim")
    assert samples.shape[1] == tile_position(0, 3)[1] + 28 * SCALE + 4  # 4 columns
    assert "ddim, 8 steps, w = 1, seed 5" in caption and "the first 4" in caption
    # a slider's 8.0 and a digit as text are the same request
    again = client.predict(api_name="/compare_architectures", **{**values, "steps": 8.0, "reverse_digit": "4"})
    assert np.array_equal(read_image(again[0]), samples)


def test_the_comparison_scores_every_variants_samples(classroom):
    tab = ArchitectureTab(classroom)
    request = check_sampling_request([0, 1, 2, 8], seed=3, num_train_steps=classroom.pipe.num_train_steps)
    comparison = tab.compare(request)
    assert comparison.names == list(VARIANTS) and comparison.samples.shape == (4, 4, 28, 28)
    for name, samples, read in zip(comparison.names, comparison.samples, comparison.read):
        assert np.abs(samples.astype(int) - load_variant(name).generate([0, 1, 2, 8], seed=3)).max() <= 1
        assert np.array_equal(read, classifier_scores(classroom.classifier, samples, [0, 1, 2, 8]).predicted_digit)
    assert comparison.steps == [1, 3, 6, 9, 12] and comparison.x_t.shape == (4, 5, 4, 28, 28)
    assert np.array_equal(comparison.x_t[:, -1], comparison.samples)  # the last frame is the sample


def test_the_page_shows_the_logs_the_table_and_numbers_from_the_report(classroom):
    tab = ArchitectureTab(classroom)
    training, heldout = tab.loss_tables()
    assert set(training["variant"]) == set(heldout["variant"]) and len(set(heldout["variant"])) == len(VARIANTS)
    assert training["step"].min() >= settings.ARCHITECTURE_LOSS_FROM_STEP
    report = {r["name"]: r for r in read_report()["variants"]}
    for name, r in report.items():
        mine = heldout[heldout["variant"] == ui_title(name)]
        assert len(mine) == r["epoch"] and mine["loss"].iloc[-1] == r["heldout_loss"]
    assert tab.table() == (REPORT.parent / "ablations.md").read_text()
    text = tab.explanation()
    assert text == explanation(report)
    for name in ("no_skip_connections", "no_time_embedding", "no_attention"):
        r = report[name]
        assert f"held-out loss {r['heldout_loss']:.4f}" in text and f"{r['accuracy']:.1%}" in text
        assert f"{r['fd_over_floor']:.2f}×" in text
    assert f"the reference's {report['reference']['heldout_loss']:.4f}" in text


def ui_title(name: str) -> str:
    from ui.architecture import TITLES

    return TITLES[name]


def test_without_a_report_the_page_says_not_evaluated(classroom, monkeypatch, tmp_path):
    import ui.architecture

    monkeypatch.setattr(ui.architecture, "REPORT", tmp_path / "ablations")
    monkeypatch.setattr(ui.architecture, "read_report", lambda: read_report(tmp_path / "ablations"))
    tab = ArchitectureTab(classroom)
    assert "Not evaluated yet" in tab.table()
    text = tab.explanation()  # from the loss logs alone
    assert f"held-out loss {final_losses('no_attention')['heldout_loss']:.4f}" in text and "classifier" not in text


@pytest.mark.parametrize("changes,expected", [
    ({"digits": ""}, "digits must be text of 1 to 10 digits such as '0123456789', got ''"),
    ({"digits": "12a"}, "got '12a'"),
    ({"digits": "01234567890"}, "1 to 10 digits"),
    ({"digits": None}, "got None"),
    ({"digits": ["1", "2"]}, "digits must be text"),
    ({"digits": "0123", "reverse_digit": 5}, "follows one of the digits drawn (0, 1, 2, 3); got reverse_digit 5"),
    ({"reverse_digit": "x"}, "reverse_digit must be one digit from 0 to 9, got 'x'"),
    ({"reverse_digit": "all"}, "reverse_digit must be one digit from 0 to 9"),
    ({"reverse_digit": True}, "got True"),
    ({"sampler": "euler"}, "sampler must be one of"),
    ({"steps": 0}, "steps for dpm++2m-sde must be a whole number from 1 to 100, got 0"),
    ({"steps": 101}, "got 101"),
    ({"steps": 2.5}, "got 2.5"),
    ({"sampler": "ddpm", "steps": 500}, "too much work for one request: 10 samples × 500 steps = 5,000 "
                                        "(at most 1,000)"),
    ({"guidance": 9}, "guidance w must be a finite number from -2 to 8, got 9"),
    ({"seed": -1}, "seed must be a whole number"),
    ({"seed": "one"}, "got 'one'"),
])
def test_bad_input_gets_a_clear_error(client, changes, expected):
    with pytest.raises(Exception) as error:
        client.predict(api_name="/compare_architectures", **changes)
    assert expected in str(error.value)


def test_bad_input_changes_nothing(classroom):
    import gradio as gr

    tab = ArchitectureTab(classroom)
    before = tab.compare_architectures(digits="42", reverse_digit=2, seed=9)
    kept = dict(tab.results._items)
    for bad in ({"digits": "4x"}, {"reverse_digit": 7}, {"steps": 1000}):
        with pytest.raises(gr.Error):
            tab.compare_architectures(**{"digits": "42", "reverse_digit": 2, "seed": 9, **bad})
    assert tab.results._items.keys() == kept.keys()
    after = tab.compare_architectures(digits="42", reverse_digit=2, seed=9)
    assert all(np.array_equal(a, b) for a, b in zip(before[:2], after[:2])) and before[2] == after[2]


def test_a_report_file_round_trips(tmp_path):
    report = read_report()
    (tmp_path / "r.json").write_text(json.dumps(report))
    assert read_report(tmp_path / "r") == report
    assert read_report(tmp_path / "missing") == {}
