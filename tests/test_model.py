"""The U-Net: shapes, and that the context mask really means 'no label'."""
import torch

from diffusion.checkpoints import read_config
from diffusion.model import ClassConditionalUNet, UNetConfig, build_unet, sinusoidal_embedding
from diffusion.pipeline import DEFAULT_UNET


def _randomised(model):
    """Zero-initialised output layers would make every check trivially pass: randomise all weights."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def test_output_shape(tiny_unet_config):
    model = build_unet(tiny_unet_config)
    x = torch.randn(3, 1, 28, 28)
    out = model(x, torch.tensor([1, 20, 50]), torch.tensor([0, 5, 9]))
    assert out.shape == (3, 1, 28, 28)


def test_masked_labels_give_the_unconditional_prediction(tiny_unet_config):
    model = _randomised(build_unet(tiny_unet_config))
    x, t = torch.randn(1, 1, 28, 28).repeat(10, 1, 1, 1), torch.full((10,), 30)
    masked = model(x, t, torch.arange(10), context_mask=torch.ones(10, dtype=torch.bool))
    # with the label dropped, the digit asked for makes no difference ...
    torch.testing.assert_close(masked, masked[:1].expand_as(masked))
    # ... while unmasked, it does
    conditional = model(x, t, torch.arange(10))
    assert (conditional - conditional[:1]).abs().amax() > 1e-3


def test_mask_applies_per_sample(tiny_unet_config):
    model = _randomised(build_unet(tiny_unet_config))
    x, t, y = torch.randn(2, 1, 28, 28), torch.tensor([5, 5]), torch.tensor([3, 3])
    mixed = model(x, t, y, context_mask=torch.tensor([False, True]))
    torch.testing.assert_close(mixed[0], model(x[:1], t[:1], y[:1])[0])
    torch.testing.assert_close(mixed[1], model(x[1:], t[1:], y[1:], torch.tensor([True]))[0])


def test_time_embedding_is_sines_and_cosines_that_tell_steps_apart():
    t = torch.arange(0, 501)
    e = sinusoidal_embedding(t, 32)
    assert e.shape == (501, 32)
    # the first half are sines, the second cosines, of the same angles t·f_i with f_0 = 1
    torch.testing.assert_close(e[:, :16] ** 2 + e[:, 16:] ** 2, torch.ones(501, 16))
    torch.testing.assert_close(e[:, 0], torch.sin(t.float()))
    # every pair of steps 0..500 gets a clearly different vector (a network can tell t from t+1)
    nearest = torch.cdist(e, e).fill_diagonal_(float("inf")).min()
    assert nearest > 0.1


def test_default_config_is_the_shipped_network():
    """One source of truth: the config's defaults are the architecture that ships, which fits a CPU."""
    shipped = read_config(DEFAULT_UNET)["architecture"]
    defaults = UNetConfig().to_dict()
    assert {k: v for k, v in defaults.items() if k != "guidance_head"} == \
        {k: shipped.get(k, defaults[k]) for k in defaults if k != "guidance_head"}
    model = ClassConditionalUNet(UNetConfig())
    assert sum(p.numel() for p in model.parameters()) < 3_000_000


def test_a_student_with_a_guidance_head_starts_as_its_teacher(tiny_unet_config):
    from diffusion.model import add_guidance_head
    teacher = _randomised(build_unet(tiny_unet_config))
    student = add_guidance_head(teacher).eval()
    assert student.config.guidance_head and not teacher.config.guidance_head
    assert student.config.to_dict()["guidance_head"] is True  # saved in the checkpoint's JSON
    x, t, y = torch.randn(4, 1, 28, 28), torch.tensor([1, 10, 30, 49]), torch.tensor([0, 3, 7, 9])
    mask = torch.tensor([False, True, False, True])
    with torch.no_grad():
        eps, direction = student.eps_and_direction(x, t, y, mask)
        torch.testing.assert_close(eps, teacher(x, t, y, mask))
        torch.testing.assert_close(student(x, t, y, mask), eps)  # forward() is still ε̂ [B,1,28,28]
    assert eps.shape == direction.shape == (4, 1, 28, 28)
    assert torch.count_nonzero(direction) == 0  # the new output channel starts at zero


def test_a_network_without_a_guidance_head_says_so(tiny_unet_config):
    import pytest
    model = build_unet(tiny_unet_config)
    with pytest.raises(ValueError, match="no guidance head"):
        model.eps_and_direction(torch.randn(1, 1, 28, 28), torch.tensor([3]), torch.tensor([1]))
