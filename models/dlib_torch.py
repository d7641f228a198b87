"""dlib's face-recognition ResNet rebuilt in PyTorch from the weights in face-recognition-models.

dlib-bin is built without BLAS, so its own network takes ~250 ms per face on our CPUs; the same
weights run in torch take a few ms per face and can batch on CUDA. The .dat file is parsed
directly: dlib writes layers input-first, integers as a control byte (low nibble = byte count,
bit 7 = sign) plus little-endian bytes, and tensor data as raw little-endian float32."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# dlib's input_rgb_image_sized<150>: (pixel - channel mean) / 256
DLIB_MEAN = (122.782, 117.001, 104.298)
CHIP_SIZE = 150


class _Reader:
    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def int(self) -> int:
        control = self.data[self.pos]
        n = control & 0x0F
        value = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + n], "little")
        self.pos += 1 + n
        return -value if control & 0x80 else value

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise ValueError(f"unsupported dlib tensor version {version}")
        shape = [self.int() for _ in range(4)]
        count = int(np.prod(shape))
        arr = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).astype(np.float32)
        self.pos += 4 * count
        return arr.reshape(shape)


def parse_dlib_resnet(path: Path) -> dict[str, list]:
    """The parameters of every con_/affine_/fc_ layer, input side first."""
    data = path.read_bytes()
    marker = re.compile(rb"\x01\x05con_4|\x01\x07affine_|\x01\x04fc_2")
    convs, affines, fc = [], [], None
    pos = 0
    while True:
        m = marker.search(data, pos)
        if m is None:
            break
        r = _Reader(data, m.end())
        kind = m.group()[2:]
        if kind == b"con_4":
            params = r.tensor().reshape(-1)
            nf, kh, kw, sy, sx, py, px = (r.int() for _ in range(7))
            n_w = params.size - nf
            cin = n_w // (nf * kh * kw)
            convs.append(dict(weight=params[:n_w].reshape(nf, cin, kh, kw), bias=params[n_w:],
                              stride=(sy, sx), padding=(py, px)))
        elif kind == b"affine_":
            params = r.tensor().reshape(-1)
            c = params.size // 2
            affines.append(dict(gamma=params[:c], beta=params[c:]))
        else:
            n_out, n_in = r.int(), r.int()
            fc = r.tensor().reshape(n_in, n_out)
        pos = r.pos
    if fc is None or len(convs) != len(affines):
        raise ValueError(f"{path}: unexpected layout ({len(convs)} conv, {len(affines)} affine layers)")
    return {"convs": convs, "affines": affines, "fc": fc}


def _add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: tensors of different shapes are zero-padded (bottom/right, extra channels)."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))
    a = F.pad(a, (0, w - a.shape[3], 0, h - a.shape[2], 0, c - a.shape[1]))
    b = F.pad(b, (0, w - b.shape[3], 0, h - b.shape[2], 0, c - b.shape[1]))
    return a + b


class _ConvAffine(nn.Module):
    """dlib con_ followed by affine_ folded into one conv (affine is a fixed per-channel scale)."""

    def __init__(self, conv: dict, affine: dict):
        super().__init__()
        w = torch.from_numpy(conv["weight"] * affine["gamma"][:, None, None, None])
        b = torch.from_numpy(conv["bias"] * affine["gamma"] + affine["beta"])
        self.conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2:], conv["stride"], conv["padding"])
        with torch.no_grad():
            self.conv.weight.copy_(w)
            self.conv.bias.copy_(b)

    def forward(self, x):
        return self.conv(x)


class _Block(nn.Module):
    def __init__(self, layers: list[_ConvAffine], down: bool):
        super().__init__()
        self.a, self.b = layers
        self.down = down

    def forward(self, x):
        y = self.b(F.relu(self.a(x)))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_add_prev(skip, y))


class DlibResNet(nn.Module):
    """Stem (7x7 conv, max-pool), 14 residual blocks, global average pool, 128-d projection."""

    def __init__(self, params: dict):
        super().__init__()
        units = [_ConvAffine(c, a) for c, a in zip(params["convs"], params["affines"])]
        self.stem = units[0]
        blocks = []
        rest = units[1:]
        for i in range(0, len(rest), 2):
            down = rest[i].conv.stride[0] == 2
            blocks.append(_Block(rest[i:i + 2], down))
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(params["fc"].shape[0], params["fc"].shape[1], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(params["fc"].T.copy()))
        self.register_buffer("mean", torch.tensor(DLIB_MEAN).view(1, 3, 1, 1))

    def forward(self, chips_uint8_nhwc: torch.Tensor) -> torch.Tensor:
        x = (chips_uint8_nhwc.permute(0, 3, 1, 2).float() - self.mean) / 256.0
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))
