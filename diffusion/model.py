"""The network: a small class-conditional U-Net that predicts the noise ε in x_t.

It follows the course's ContextUnet and the improvements the course names:

    x_t [B,1,28,28] ─ conv ─► down 28×28 ─► down 14×14 ─► down 7×7 + attention
                                 │              │              │
                                 └──(concat)──► up 28×28 ◄── up 14×14 ◄── up 7×7 + attention ─► conv ─► ε̂

* Skip connections: each up block sees the matching down block's features concatenated
  onto its input. Fine detail (stroke edges) lives at 28×28 and would otherwise have to
  survive being squeezed through 7×7.
* Time embedding: the same network denoises every t, so it must be told how noisy x_t is.
  t goes through a sinusoidal embedding and an MLP.
* Class embedding: the label as a one-hot vector through a linear layer. The *context mask*
  zeroes the one-hot vector ("no label"), so one network learns both ε(x,c) and ε(x,∅),
  which classifier-free guidance needs.
* Both embeddings are added and enter every residual block as a per-channel scale and shift
  of the GroupNorm output (FiLM).
* Guidance head (optional, `guidance_head=True`): a second output channel that predicts the
  guidance direction ε(x,c) − ε(x,∅). Guided sampling then needs ONE network pass per step
  instead of two: ε = ε(x,c) + w·(ε(x,c) − ε(x,∅)) = (1+w)·ε(x,c) − w·ε(x,∅), for any w.
  Such a network is distilled from an ordinary one (`python -m diffusion.train --teacher …`).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_CLASSES = 10


@dataclass
class UNetConfig:
    """Architecture of `ClassConditionalUNet` (stored in each checkpoint's JSON)."""

    channels: tuple[int, ...] = (24, 48, 96)   # width at 28×28, 14×14, 7×7 (the shipped network's)
    blocks_per_level: int = 1                  # residual blocks per level on the way down
    attention_heads: int = 4                   # self-attention at the lowest resolution (0 = off)
    embedding_dim: int = 128                   # width of the time + class embedding
    groups: int = 8                            # GroupNorm groups
    num_classes: int = NUM_CLASSES
    image_channels: int = 1
    guidance_head: bool = False                # also predict ε(x,c) − ε(x,∅) (see the module docstring)
    # Ablations (the Architecture tab): switch one part off to see what it is for.
    skip_connections: bool = True              # False: the up path gets no encoder features
    time_embedding: bool = True                # False: the network is not told t

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        if any(c % self.groups for c in self.channels):
            raise ValueError(f"every channel count in {self.channels} must be divisible by groups={self.groups}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style embedding of time steps. t: [B] (any real values) -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class ResidualBlock(nn.Module):
    """GroupNorm → SiLU → conv, twice, with the embedding as scale/shift; plus a skip path."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups if in_ch % groups == 0 else 1, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        nn.init.zeros_(self.conv2.weight)  # start as identity: training is stabler
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H·W positions (used at 7×7 only: 49 tokens)."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W)
        # [B,heads,HW,C/heads] each; contiguous, because the CPU's fused attention kernel needs it
        # (with strided inputs it falls back to a path about 2× slower)
        q, k, v = qkv.transpose(-1, -2).contiguous().unbind(1)
        h = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(h.transpose(-1, -2).reshape(B, C, H, W))


class ClassConditionalUNet(nn.Module):
    """ε̂ = model(x_t, t, label, context_mask).

    x:     [B,1,28,28] noisy images x_t (data scaled to [-1,1])
    t:     [B] integer time steps in 1..T (int or float tensor)
    label: [B] integer digits 0..9
    context_mask: [B] bool, True = drop the label (unconditional prediction ε(x,∅)); None = keep all.
    returns ε̂: [B,1,28,28]

    With `config.guidance_head`, `eps_and_direction` returns ε̂ and the guidance direction together.
    """

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = cfg = config or UNetConfig()
        ch, E, G = cfg.channels, cfg.embedding_dim, cfg.groups

        self.time_mlp = nn.Sequential(nn.Linear(E, E), nn.SiLU(), nn.Linear(E, E)) if cfg.time_embedding else None
        self.class_embed = nn.Linear(cfg.num_classes, E)  # one-hot -> embedding (zero vector = no label)

        self.stem = nn.Conv2d(cfg.image_channels, ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        skip_channels = []
        in_ch = ch[0]
        for level, out_ch in enumerate(ch):
            blocks = nn.ModuleList()
            for _ in range(cfg.blocks_per_level):
                blocks.append(ResidualBlock(in_ch, out_ch, E, G))
                in_ch = out_ch
            self.down_blocks.append(blocks)
            skip_channels.append(in_ch)
            last = level == len(ch) - 1
            self.downsamples.append(nn.Identity() if last else nn.Conv2d(in_ch, in_ch, 3, stride=2, padding=1))

        self.mid_attention = SelfAttention(in_ch, cfg.attention_heads, G) if cfg.attention_heads else nn.Identity()
        self.mid_block = ResidualBlock(in_ch, in_ch, E, G)

        self.up_blocks = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for level in reversed(range(len(ch))):
            out_ch = ch[level]
            skip_ch = skip_channels[level] if cfg.skip_connections else 0
            self.up_blocks.append(ResidualBlock(in_ch + skip_ch, out_ch, E, G))
            in_ch = out_ch
            first = level == 0
            self.upsamples.append(nn.Identity() if first else
                                  nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                                nn.Conv2d(in_ch, ch[level - 1], 3, padding=1)))
            if not first:
                in_ch = ch[level - 1]
        self.up_attention = SelfAttention(ch[-1], cfg.attention_heads, G) if cfg.attention_heads else nn.Identity()

        out_channels = cfg.image_channels * (2 if cfg.guidance_head else 1)
        self.head = nn.Sequential(nn.GroupNorm(G, ch[0]), nn.SiLU(), nn.Conv2d(ch[0], out_channels, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def embed(self, t: torch.Tensor, label: torch.Tensor, context_mask: torch.Tensor | None) -> torch.Tensor:
        """Time + class embedding [B,E]. A masked row gets the all-zero one-hot (= 'no label')."""
        dtype = self.class_embed.weight.dtype  # float32, or bfloat16 for fast CPU inference
        one_hot = F.one_hot(label.long(), self.config.num_classes).to(dtype)
        if context_mask is not None:
            one_hot = one_hot * (~context_mask.bool()).to(dtype)[:, None]
        class_emb = self.class_embed(one_hot)
        if not self.config.time_embedding:  # ablation: the network must guess the noise level from x_t alone
            return class_emb
        return self.time_mlp(sinusoidal_embedding(t, self.config.embedding_dim).to(dtype)) + class_emb

    def forward(self, x: torch.Tensor, t: torch.Tensor, label: torch.Tensor,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.unet(x, t, label, context_mask)[:, :self.config.image_channels]

    def eps_and_direction(self, x: torch.Tensor, t: torch.Tensor, label: torch.Tensor,
                          context_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(ε̂(x,c), ε̂(x,c) − ε̂(x,∅)), each [B,1,28,28], from one pass; needs `config.guidance_head`.
        A masked row's direction is 0 (without a label there is nothing to steer towards)."""
        if not self.config.guidance_head:
            raise ValueError("this network has no guidance head; guide it with two passes (sampling.guided_eps)")
        return self.unet(x, t, label, context_mask).chunk(2, dim=1)

    def unet(self, x: torch.Tensor, t: torch.Tensor, label: torch.Tensor,
             context_mask: torch.Tensor | None) -> torch.Tensor:
        """The network itself: [B,1,28,28] -> [B,1 or 2,28,28] (see `forward`, `eps_and_direction`)."""
        emb = self.embed(t, label, context_mask)
        h = self.stem(x)
        skips = []
        for blocks, down in zip(self.down_blocks, self.downsamples):
            for block in blocks:
                h = block(h, emb)
            skips.append(h)
            h = down(h)
        h = self.mid_block(self.mid_attention(h), emb)
        for i, (block, up) in enumerate(zip(self.up_blocks, self.upsamples)):
            skip = skips.pop()
            h = block(torch.cat([h, skip], dim=1) if self.config.skip_connections else h, emb)
            if i == 0:
                h = self.up_attention(h)
            h = up(h)
        return self.head(h)


def add_guidance_head(teacher: ClassConditionalUNet) -> ClassConditionalUNet:
    """A copy of `teacher` with a guidance head: it starts out predicting ε̂ exactly as the
    teacher does, and a guidance direction of 0 (the new output channel starts at zero)."""
    student = ClassConditionalUNet(UNetConfig(**{**teacher.config.to_dict(), "guidance_head": True}))
    weights = teacher.state_dict()
    last = f"head.{len(student.head) - 1}"  # the output conv: its new channels start at zero
    for name, new in (("weight", student.head[-1].weight), ("bias", student.head[-1].bias)):
        old = weights[f"{last}.{name}"]
        weights[f"{last}.{name}"] = torch.cat([old, torch.zeros_like(new[len(old):])])
    student.load_state_dict(weights)
    return student


class FrozenUNet(nn.Module):
    """A trained U-Net as one TorchScript graph, for serving: the same numbers as the network it came from,
    but one call runs the whole network in C++. An ordinary (eager) forward hands the Python interpreter
    back and forth at each of its ~100 ops; with many Python threads busy beside it (a web app streaming
    frames to a class) each hand-back can wait, and a 30 ms forward took 600 ms. Frozen, it took 60 ms.
    Same interface as ClassConditionalUNet: forward, eps_and_direction, config, parameters."""

    def __init__(self, model: ClassConditionalUNet):
        super().__init__()
        self.config = model.config
        p = next(model.parameters())
        x = torch.zeros(2, model.config.image_channels, 28, 28, dtype=p.dtype, device=p.device)
        t = torch.ones(2, dtype=torch.long, device=p.device)
        mask = torch.zeros(2, dtype=torch.bool, device=p.device)
        with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.compile, which takes
            warnings.simplefilter("ignore", FutureWarning)  # ~40 s to compile here and recompiles per batch size
            # GroupNorm's check that a batch has more than one value per channel (a training-time check)
            # reads a size as a Python number, which tracing records as a constant: harmless here
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            with torch.inference_mode():
                self.graph = torch.jit.freeze(torch.jit.trace(_Unet(model).eval(), (x, t, t, mask), check_trace=False))
        self.anchor = nn.Parameter(torch.zeros(0, dtype=p.dtype, device=p.device), requires_grad=False)  # dtype, device

    def forward(self, x, t, label, context_mask=None):
        return self.unet(x, t, label, context_mask)[:, :self.config.image_channels]

    def eps_and_direction(self, x, t, label, context_mask=None):
        if not self.config.guidance_head:
            raise ValueError("this network has no guidance head; guide it with two passes (sampling.guided_eps)")
        return self.unet(x, t, label, context_mask).chunk(2, dim=1)

    def unet(self, x, t, label, context_mask):
        mask = torch.zeros(len(x), dtype=torch.bool, device=x.device) if context_mask is None else context_mask
        return self.graph(x, t, label, mask)


class _Unet(nn.Module):
    """ClassConditionalUNet.unet as a module with a context mask always given (what FrozenUNet traces)."""

    def __init__(self, model: ClassConditionalUNet):
        super().__init__()
        self.model = model

    def forward(self, x, t, label, context_mask):
        return self.model.unet(x, t, label, context_mask)


def build_unet(config: dict) -> ClassConditionalUNet:
    """A freshly initialised U-Net from a checkpoint config's "architecture" entry."""
    return ClassConditionalUNet(UNetConfig(**config["architecture"]))


def bf16_is_fast(device: torch.device | str = "cpu") -> bool:
    """Whether bfloat16 runs faster than float32 here: on a GPU, or on a CPU whose oneDNN has
    bfloat16 kernels (AVX512-BF16 / AMX; about 2× faster for this net). Elsewhere bfloat16 is
    emulated and slow. (The app's and the command lines' --bf16 / --no-bf16 override it.)"""
    kind = torch.device(device).type
    if kind == "cuda":
        return True
    if kind != "cpu":  # mps: float32 (its bfloat16 support depends on the macOS version)
        return False
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
