"""A minimal PyTorch BSRNN-FlowSE, written from REFERENCE.md §3.3 with the official parameter names.

The official network is `BSRNN` in `baseline_code/models/bsrnn_flowse.py` of
urgent2026_challenge_track1 (commit 7acf00f); it lives inside the official package and is not
pip-installable, so this module stands in for it in the conversion parity test and the train-step
benchmark. Module names and registration order (hence state-dict keys and `parameters()` order,
which torch-ema's shadow list follows) are that file's: band_split_y, band_split_x, condition_fc,
norm/rnn/fc_time, norm/rnn/fc_freq, t_cond, grad_decoder.{mlp_mask, mlp_residual,
conv_after_mask, conv_after_residual}; loaded with the official module's state dict, it gave the
same outputs at 16 and 48 kHz (checked once against that file, 2 layers, N = 16). The official
BandSplit also stops at the first band whose top bin reaches fs/2 when the training code passes fs
(`current_fs`); at the seven URGENT rates that selects the same bands as stopping at the input's
bins, as here (REFERENCE.md §3.1 table).
It reuses ESPnet's norms; band split and decoder are written here because ESPnet's BandSplit only
knows the 481-bin layout. Torch is imported by whoever imports this file.
"""

from __future__ import annotations

import torch
from espnet2.enh.layers.bsrnn import choose_norm, choose_norm1d
from torch import nn

BANDS_769 = (5,) + (4,) * 26 + (10,) * 10 + (50,) * 10 + (60,)


class BandSplit(nn.Module):
    """Per band: (re, im) of w bins -> norm1d(2w) -> Conv1d(2w, N, 1); output [B, N, T, K]."""

    def __init__(self, band_widths, channels, norm_type="GN"):
        super().__init__()
        self.band_widths = tuple(band_widths)
        self.norm = nn.ModuleList(choose_norm1d(norm_type, 2 * w) for w in self.band_widths)
        self.fc = nn.ModuleList(nn.Conv1d(2 * w, channels, 1) for w in self.band_widths)

    def forward(self, x):  # x [B, T, F, 2]
        outs, start = [], 0
        for k, width in enumerate(self.band_widths):
            band = x[:, :, start : start + width]
            if band.shape[2] < width:
                band = nn.functional.pad(band, (0, 0, 0, width - band.shape[2]))
            band = band.reshape(band.shape[0], band.shape[1], 2 * width).transpose(1, 2)
            outs.append(self.fc[k](self.norm[k](band)))
            start += width
            if start >= x.shape[2]:
                break
        return torch.stack(outs, dim=-1)


class FourierProjection(nn.Module):
    """Fixed W ~ N(0, 1)^(N/2); emb(t) = [sin(2πtW), cos(2πtW)]."""

    def __init__(self, size):
        super().__init__()
        self.W = nn.Parameter(torch.randn(size), requires_grad=False)

    def forward(self, t):
        proj = t[:, None] * self.W[None, :] * 2 * torch.pi
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class GradDecoder(nn.Module):
    """Per band norm1d -> Conv1d(N, 16w) -> tanh, viewed [B, 16, w, T]; bands concatenated on
    frequency -> Conv2d(16, 4, 5, padding 2) -> GLU -> [B, 2, F', T]; zero-padded to the layout."""

    def __init__(self, band_widths, channels, sub_channels=16, norm_type="GN"):
        super().__init__()
        self.band_widths = tuple(band_widths)
        self.sub_channels = sub_channels

        def head(width):
            return nn.Sequential(
                choose_norm1d(norm_type, channels),
                nn.Conv1d(channels, width * sub_channels, 1),
                nn.Tanh(),
            )

        # registration order as the official GradDecoder: mlp_mask, mlp_residual, conv_after_*
        self.mlp_mask = nn.ModuleList(head(w) for w in self.band_widths)
        self.mlp_residual = nn.ModuleList(head(w) for w in self.band_widths)
        self.conv_after_mask = nn.Sequential(nn.Conv2d(sub_channels, 4, 5, 1, 2), nn.GLU(dim=1))
        self.conv_after_residual = nn.Sequential(nn.Conv2d(sub_channels, 4, 5, 1, 2), nn.GLU(dim=1))

    def _head(self, mlps, conv, z):
        b, _, t, k = z.shape
        maps = [
            mlps[i](z[..., i]).view(b, self.sub_channels, self.band_widths[i], t) for i in range(k)
        ]
        out = conv(torch.cat(maps, dim=2))  # [B, 2, F', T]
        out = nn.functional.pad(out, (0, 0, 0, sum(self.band_widths) - out.shape[2]))
        return out.moveaxis(1, 3).contiguous()  # [B, F, T, 2]

    def forward(self, z):
        return (
            self._head(self.mlp_mask, self.conv_after_mask, z),
            self._head(self.mlp_residual, self.conv_after_residual, z),
        )


class FlowSEBSRNN(nn.Module):
    """FlowSE network: forward(dnn_input [B, 2, F, T] complex (x_t, y), t [B]) -> g [B, 1, F, T]."""

    def __init__(
        self, num_channel=384, num_layer=6, band_widths=BANDS_769, causal=False, norm_type="GN"
    ):
        super().__init__()
        norm1d = norm_type if norm_type != "cfLN" else "cLN"
        self.num_layer = num_layer
        # registration order as the official module: it fixes state_dict and parameters() order
        self.band_split_y = BandSplit(band_widths, num_channel, norm1d)
        self.band_split_x = BandSplit(band_widths, num_channel, norm1d)
        self.condition_fc = nn.Linear(2 * num_channel, num_channel)
        self.norm_time = nn.ModuleList()
        self.rnn_time = nn.ModuleList()
        self.fc_time = nn.ModuleList()
        self.norm_freq = nn.ModuleList()
        self.rnn_freq = nn.ModuleList()
        self.fc_freq = nn.ModuleList()
        self.t_cond = nn.ModuleList()
        hidden = 2 * num_channel
        for _ in range(num_layer):
            self.t_cond.append(FourierProjection(num_channel // 2))
            self.norm_time.append(choose_norm(norm_type, num_channel))
            self.rnn_time.append(
                nn.LSTM(num_channel, hidden, batch_first=True, bidirectional=not causal)
            )
            self.fc_time.append(nn.Linear(hidden if causal else 2 * hidden, num_channel))
            self.norm_freq.append(choose_norm(norm_type, num_channel))
            self.rnn_freq.append(nn.LSTM(num_channel, hidden, batch_first=True, bidirectional=True))
            self.fc_freq.append(nn.Linear(2 * hidden, num_channel))
        self.grad_decoder = GradDecoder(band_widths, num_channel, norm_type=norm1d)

    def forward(self, dnn_input, t):
        x_t = dnn_input[:, 0]  # [B, F, T]

        def ri(spec):  # complex [B, F, T] -> [B, T, F, 2]
            return torch.stack([spec.real, spec.imag], dim=-1).transpose(1, 2)

        z = torch.cat([self.band_split_x(ri(x_t)), self.band_split_y(ri(dnn_input[:, 1]))], dim=1)
        z = self.condition_fc(z.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # [B, N, T, K]
        b, n, frames, k = z.shape
        for i in range(self.num_layer):
            out = self.norm_time[i](z) + self.t_cond[i](t)[..., None, None]
            out = out.transpose(1, 3).reshape(b * k, frames, n)
            out = self.fc_time[i](self.rnn_time[i](out)[0])
            z = z + out.reshape(b, k, frames, n).transpose(1, 3)
            out = self.norm_freq[i](z).permute(0, 2, 3, 1).reshape(b * frames, k, n)
            out = self.fc_freq[i](self.rnn_freq[i](out)[0])
            z = z + out.reshape(b, frames, k, n).permute(0, 3, 1, 2)
        m, r = self.grad_decoder(z)
        bins = x_t.shape[1]
        m = torch.view_as_complex(m)[:, :bins]
        r = torch.view_as_complex(r)[:, :bins]
        return (m * x_t + r).unsqueeze(1)


def flow_matching_loss(
    net, encoder, clean, noisy, lengths, fs, sigma_min=0.05, sigma_max=0.5, t_eps=0.03
):
    """The reference training loss (REFERENCE.md §3.3) with an ESPnet STFTEncoder (compressing)."""
    x0 = encoder(clean, lengths, fs=fs)[0].permute(0, 2, 1).unsqueeze(1)  # [B, 1, F, T]
    y = encoder(noisy, lengths, fs=fs)[0].permute(0, 2, 1).unsqueeze(1)
    t = (1 - torch.rand(x0.shape[0], device=x0.device)) * (1.0 - t_eps) + t_eps
    tb = t[:, None, None, None]
    z = torch.randn_like(x0)
    x_t = (1 - tb) * x0 + tb * y + ((1 - tb) * sigma_min + tb * sigma_max) * z
    v = -net(torch.cat([x_t, y], dim=1), t)
    err = v - ((sigma_max - sigma_min) * z + (y - x0))
    return torch.mean(0.5 * torch.sum(err.abs().square().reshape(err.shape[0], -1), dim=-1))
