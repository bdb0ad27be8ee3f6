"""torchvision ResNets for event images: any number of input channels, uint8 or float input, local weights only.

`stem="imagenet"` keeps torchvision's 7x7 stride-2 convolution and max-pool (the seed's ResNet34/ResNet50).
`stem="small"` is the seed's "ResNet50 modified" column, rebuilt for small, sparse detector images: a 3x3
stride-1 convolution keeps single-pixel hits that a 7x7 stride-2 filter averages away, and the max-pool after it
(`stem_pool`) is kept or dropped (dropping it quadruples the cost); the head adds dropout, because a few thousand
synthetic events over-fit a 23M-parameter network quickly. Measured on the toy tracker's 3-class task with 9000
events per class (docs/benchmarks.md): on `phi-rho` + `rz` images at 32 x 128 px 94% after 6 epochs, still
rising, against 88% for plain resnet50 (resnet34: 95%); on `xy` + `rz` at 32 px 79% against 77% for plain resnet50 (resnet34: 79%), and 74%
against 71% with 2000 events per class.

`bn_momentum` (0.3, torchvision's is 0.1): sparse detector images give first-layer activations with a variance
of about 1e-3, so BatchNorm's running variance, which starts at 1, needs hundreds of steps at momentum 0.1 to
forget its start (0.9^55 ≈ 3e-3): until then eval mode sees wrongly scaled activations and predicts one class
(measured: 98% accuracy with batch statistics, 50% in eval mode after 55 steps). null: a cumulative average.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from cmsdl.errors import ConfigError, closest

log = logging.getLogger(__name__)
ARCHS = {"resnet18": models.resnet18, "resnet34": models.resnet34, "resnet50": models.resnet50,
         "resnet101": models.resnet101}
STEMS = ("imagenet", "small")


def load_local_weights(body: nn.Module, path: str | Path) -> None:
    """Load a torchvision state dict from a local file; tensors whose shape differs (e.g. the head) are skipped."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model.net.weights: {path} does not exist (weights are read from local files only)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError(f"model.net.weights: {path} is not a readable state dict ({type(err).__name__})") from None
    state = state.get("state_dict", state)
    own = body.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ConfigError(f"model.net.weights: no tensor of {path} fits this network (keys like {next(iter(state), '?')})")
    body.load_state_dict(usable, strict=False)
    log.info("loaded %d of %d tensors from %s", len(usable), len(own), path)


def first_conv(old: nn.Conv2d, in_channels: int, small: bool) -> nn.Conv2d:
    """The stem convolution for `in_channels`; keeps (channel-averaged) pretrained 7x7 kernels when it can."""
    if small:
        return nn.Conv2d(in_channels, old.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    conv = nn.Conv2d(in_channels, old.out_channels, kernel_size=7, stride=2, padding=3, bias=False)
    with torch.no_grad():
        conv.weight.copy_(old.weight.mean(dim=1, keepdim=True).expand_as(conv.weight) * (3 / in_channels))
    return conv


class ResNet(nn.Module):
    """A torchvision ResNet whose stem, input channels and head follow the event images."""

    def __init__(
        self,
        in_channels: int,
        out_features: int,
        arch: str = "resnet34",
        stem: str = "imagenet",
        stem_pool: bool = True,
        dropout: float = 0.0,
        weights: str | None = None,
        channels_last: bool | str = "auto",
        compile: bool = False,
        bn_momentum: float | None = 0.3,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            hint = closest(arch, ARCHS)
            raise ConfigError(f"model.net.arch: unknown {arch!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                              + f"; expected one of {', '.join(ARCHS)}")
        if stem not in STEMS:
            raise ConfigError(f"model.net.stem: got {stem!r}, expected one of {', '.join(STEMS)}")
        body = ARCHS[arch](weights=None)
        if weights:
            load_local_weights(body, weights)
        if stem == "small" or in_channels != 3:
            body.conv1 = first_conv(body.conv1, in_channels, small=stem == "small")
        if stem == "small" and not stem_pool:
            body.maxpool = nn.Identity()
        body.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(body.fc.in_features, out_features))
        for module in body.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = bn_momentum
        self.body = body
        self.in_channels, self.out_features = in_channels, out_features
        self.channels_last = channels_last
        self._compiled = torch.compile(body) if compile else None
        self._layout_done = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits; uint8 images are scaled to [0, 1] here, on the device that runs the network."""
        if x.dtype == torch.uint8:
            x = x.to(self.body.conv1.weight.dtype).mul_(1 / 255)
        if self._use_channels_last(x):
            x = x.contiguous(memory_format=torch.channels_last)
        return (self._compiled or self.body)(x)

    def _use_channels_last(self, x: torch.Tensor) -> bool:
        if self.channels_last == "auto":
            wanted = x.is_cuda or torch.is_autocast_enabled("cpu")
        else:
            wanted = bool(self.channels_last)
        if wanted and not self._layout_done:
            self.body.to(memory_format=torch.channels_last)
            self._layout_done = True
        return wanted
