"""SAM ViT-B (Kirillov et al., ICCV 2023) for fully automatic semantic segmentation, in the spirit of MedSAM.

SAM segments what a prompt (points, a box) points at. MedSAM (Ma et al., Nat. Commun. 2024) fine-tunes SAM with a
box prompt per object. Here no prompt comes from the ground truth: every class owns two *learned* prompt tokens
(the two corner tokens of a box prompt), initialised from the pretrained prompt encoder as SAM's embedding of a
box around the whole image. SAM's mask decoder runs once per class (batched, as SAM does for several prompts) and
its single-mask output (mask token 0) is that class's logit map, predicted at 1/4 of the input resolution
(the wrapper upsamples). The mask decoder is SAM's design: a two-way transformer (2 layers, 256 wide, 8 heads,
MLP 2048, attention to the image at half width) over [IoU token, 4 mask tokens, prompt tokens] and the image
embedding (+ the "no mask" dense embedding and SAM's random-Fourier positional encoding), transposed-conv
upscaling x4 and a hypernetwork MLP. SAM's IoU head and the three multi-mask hypernetworks produce nothing used
here and are left out.

Input size. The image encoder (timm ``samvit_base_patch16``, SAM's ViT-B: windowed attention with 4 global
blocks, decomposed relative positions, 256-channel neck) was trained at 1024x1024. By default the network runs at
the input size (padded to a multiple of 16): the absolute position embedding (64x64) is resampled to the patch
grid and the global blocks' relative position tables are interpolated, both inside timm. ``image_size=1024``
(``--set model.kwargs.image_size=1024``) instead resizes every input to 1024x1024 as SAM/MedSAM do (SAM resizes
the long side to 1024 and pads; our inputs are square) -- faithful to pretraining but ~4x the compute of 512.
``freeze_encoder=True`` trains the prompt tokens and the mask decoder only (image encoder frozen, eval mode).

Pretrained: the official ``sam_vit_b_01ec64.pth`` (SA-1B, Apache-2.0), converted by :func:`convert_sam` from the
official key layout (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``) and loaded strictly.
Official repo: https://github.com/facebookresearch/segment-anything
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..._errors import ConfigError
from ..card import ModelCard, Weights, register_model
from ..weights import load_pretrained, resolve
from .dinov2 import adapt_patch_embed, freeze_

SAM_VIT_B = Weights(
    source="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth", license="Apache-2.0",
    sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", dataset="SA-1B", target="")
DIM = 256  # prompt / mask-decoder width
PROMPT_TOKENS = 2  # per class: the two corner tokens of a box prompt


class _Attention(nn.Module):
    """Multi-head attention whose q/k/v projections may shrink the width (``downsample``), as in SAM."""

    def __init__(self, dim: int, heads: int, downsample: int = 1) -> None:
        super().__init__()
        inner = dim // downsample
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(dim, inner) for _ in range(3))
        self.out_proj = nn.Linear(inner, dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        def split(t: torch.Tensor) -> torch.Tensor:
            n, length, c = t.shape
            return t.reshape(n, length, self.heads, c // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q_proj(q)), split(self.k_proj(k)), split(self.v_proj(v)))
        n, h, length, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(n, length, h * c))


class _MLP(nn.Module):
    """``depth`` linear layers with ReLU between them."""

    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class _FFN(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.relu(self.lin1(x)))


class _TwoWayBlock(nn.Module):
    """Tokens self-attend, attend to the image, pass an MLP; then the image attends to the tokens."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, first: bool) -> None:
        super().__init__()
        self.first = first  # the first block adds no positional encoding to the token self-attention
        self.self_attn = _Attention(dim, heads)
        self.cross_attn_token_to_image = _Attention(dim, heads, downsample=2)
        self.mlp = _FFN(dim, mlp_dim)
        self.cross_attn_image_to_token = _Attention(dim, heads, downsample=2)
        self.norm1, self.norm2, self.norm3, self.norm4 = (nn.LayerNorm(dim) for _ in range(4))

    def forward(self, tok: torch.Tensor, img: torch.Tensor, tok_pe: torch.Tensor,
                img_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.first:
            tok = self.self_attn(tok, tok, tok)
        else:
            q = tok + tok_pe
            tok = tok + self.self_attn(q, q, tok)
        tok = self.norm1(tok)
        tok = self.norm2(tok + self.cross_attn_token_to_image(tok + tok_pe, img + img_pe, img))
        tok = self.norm3(tok + self.mlp(tok))
        img = self.norm4(img + self.cross_attn_image_to_token(img + img_pe, tok + tok_pe, tok))
        return tok, img


class TwoWayTransformer(nn.Module):
    def __init__(self, dim: int = DIM, depth: int = 2, heads: int = 8, mlp_dim: int = 2048) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_TwoWayBlock(dim, heads, mlp_dim, first=i == 0) for i in range(depth))
        self.final_attn_token_to_image = _Attention(dim, heads, downsample=2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, img: torch.Tensor, img_pe: torch.Tensor,
                tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img, img_pe = img.flatten(2).transpose(1, 2), img_pe.flatten(2).transpose(1, 2)
        tok = tokens
        for layer in self.layers:
            tok, img = layer(tok, img, tokens, img_pe)
        tok = self.norm_final_attn(tok + self.final_attn_token_to_image(tok + tokens, img + img_pe, img))
        return tok, img


class MaskDecoder(nn.Module):
    """SAM's mask decoder reduced to its single-mask output (mask token 0 and its hypernetwork)."""

    def __init__(self, dim: int = DIM) -> None:
        super().__init__()
        from timm.layers import LayerNorm2d

        self.transformer = TwoWayTransformer(dim)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(4, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, 2, stride=2), LayerNorm2d(dim // 4), nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, 2, stride=2), nn.GELU())
        self.hypernet = _MLP([dim, dim, dim, dim // 8])

    def forward(self, img: torch.Tensor, img_pe: torch.Tensor, dense: torch.Tensor,
                prompts: torch.Tensor) -> torch.Tensor:
        """``img`` [B, C, h, w] (one row per image x class), ``prompts`` [B, P, C] -> mask logits [B, 4h, 4w]."""
        b, c, h, w = img.shape
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight]).unsqueeze(0).expand(b, -1, -1)
        tokens = torch.cat([out_tokens, prompts], dim=1)
        tok, src = self.transformer(img + dense, img_pe.expand(b, -1, -1, -1), tokens)
        up = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        weights = self.hypernet(tok[:, 1])  # mask token 0: SAM's single-mask output
        return torch.einsum("bc,bchw->bhw", weights, up)


def _fourier_pe(coords: torch.Tensor, gaussian: torch.Tensor) -> torch.Tensor:
    """SAM's random-Fourier positional encoding of points in [0, 1]^2 (x, y last)."""
    proj = 2 * math.pi * ((2 * coords - 1) @ gaussian)
    return torch.cat([proj.sin(), proj.cos()], dim=-1)


class SamSemantic(nn.Module):
    """SAM ViT-B image encoder + SAM mask decoder prompted by learned per-class tokens."""

    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int | None = None,
                 freeze_encoder: bool = False) -> None:
        super().__init__()
        import timm

        if image_size is not None and (image_size < 32 or image_size % 16):
            raise ConfigError(f"sam-vit-b: image_size={image_size} must be a multiple of 16 (>= 32)",
                              fix="use --set model.kwargs.image_size=1024 (SAM's native size) or leave it unset")
        self.image_size = image_size
        # built at 1024 so the official 64x64 position embedding loads as is; resampled to the grid at run time
        self.encoder = timm.create_model("samvit_base_patch16", pretrained=False, num_classes=0,
                                         in_chans=in_channels)
        self.register_buffer("pe_gaussian", torch.randn(2, DIM // 2))  # SAM's fixed random frequencies
        self.no_mask_embed = nn.Parameter(torch.randn(1, DIM))
        self.class_prompts = nn.Parameter(torch.randn(num_classes, PROMPT_TOKENS, DIM))
        self.decoder = MaskDecoder(DIM)
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            freeze_(self.encoder)

    def train(self, mode: bool = True) -> SamSemantic:
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def dense_pe(self, h: int, w: int) -> torch.Tensor:
        """Positional encoding of the image-embedding grid's cell centres, [1, C, h, w]."""
        ys = (torch.arange(h, device=self.pe_gaussian.device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=self.pe_gaussian.device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # [h, w, (x, y)]
        return _fourier_pe(grid, self.pe_gaussian).permute(2, 0, 1).unsqueeze(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.image_size is not None and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        emb = self.encoder.forward_features(x)  # [N, 256, H/16, W/16]
        n, c, h, w = emb.shape
        k = self.class_prompts.shape[0]
        img = emb.repeat_interleave(k, dim=0)  # row i*k + j: image i, class j
        prompts = self.class_prompts.repeat(n, 1, 1)
        dense = self.no_mask_embed.reshape(1, c, 1, 1).to(img.dtype)
        masks = self.decoder(img, self.dense_pe(h, w).to(img.dtype), dense, prompts.to(img.dtype))
        return masks.reshape(n, k, *masks.shape[-2:])


def convert_sam(num_classes: int, in_channels: int = 3) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """Converter from the official SAM checkpoint layout onto :class:`SamSemantic`.

    * ``image_encoder.*`` -> ``encoder.*`` (timm's SAM ViT; its MLP layers are ``fc1/fc2``, SAM's ``lin1/lin2``);
    * ``mask_decoder.*`` -> ``decoder.*``: transformer, output tokens and upscaling 1:1, hypernetwork 0 ->
      ``hypernet``; the IoU head and hypernetworks 1-3 are dropped;
    * ``prompt_encoder``: the Fourier frequencies and the "no mask" embedding are kept; each class's two prompt
      tokens start as SAM's embedding of a box around the whole image (corners (0, 0) and (1, 1) encoded, plus
      the learned corner embeddings ``point_embeddings.2/3``). Point/mask-prompt weights are dropped, and so are
      keys outside the three modules (``pixel_mean``/``pixel_std`` in some re-saved copies).
    """

    def convert(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for key, v in state.items():
            if key.startswith("image_encoder."):
                out["encoder." + key[len("image_encoder."):].replace(".mlp.lin", ".mlp.fc")] = v
            elif key.startswith("mask_decoder."):
                rest = key[len("mask_decoder."):]
                if rest.startswith("output_hypernetworks_mlps.0."):
                    out["decoder.hypernet." + rest[len("output_hypernetworks_mlps.0."):]] = v
                elif not rest.startswith(("output_hypernetworks_mlps.", "iou_prediction_head.")):
                    out["decoder." + rest] = v
        pe = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
        if pe in state:
            gaussian = state[pe].float()
            out["pe_gaussian"] = state[pe]
            out["no_mask_embed"] = state["prompt_encoder.no_mask_embed.weight"]
            corners = _fourier_pe(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), gaussian)
            corners = corners + torch.cat([state["prompt_encoder.point_embeddings.2.weight"],
                                           state["prompt_encoder.point_embeddings.3.weight"]]).float()
            out["class_prompts"] = corners.unsqueeze(0).repeat(num_classes, 1, 1).to(state[pe].dtype)
        return adapt_patch_embed(out, "encoder.patch_embed.proj.weight", in_channels)

    return convert


@register_model(ModelCard(
    name="sam-vit-b", family="general", title="SAM ViT-B, automatic: learned per-class prompts + SAM mask decoder",
    paper="Kirillov et al., Segment Anything, ICCV 2023, arXiv:2304.02643; automatic medical use after "
          "Ma et al., Segment anything in medical images (MedSAM), Nat. Commun. 15:654, 2024",
    repo="https://github.com/facebookresearch/segment-anything", license="Apache-2.0", params_paper_m=None,
    input_divisor=16, min_size=32, pretrained={"sa1b": SAM_VIT_B}, gradcam_layer="encoder.neck",
    notes="Runs at the input size (position embeddings resampled, relative positions interpolated) unless "
          "kwargs image_size=1024 (SAM's native size; inputs resized). kwargs: freeze_encoder. No prompts from "
          "the ground truth: one learned box-like prompt per class. Not in Borst & Kounev (2026).",
))
def build_sam_vit_b(num_classes: int, in_channels: int = 3, pretrained: bool | str = False,
                    image_size: int | None = None, freeze_encoder: bool = False) -> nn.Module:
    # resolve (download / find) the checkpoint first, so a cache miss fails before the net is built
    ckpt = resolve(SAM_VIT_B, pretrained if isinstance(pretrained, str) else None) if pretrained else None
    net = SamSemantic(num_classes, in_channels, image_size=image_size, freeze_encoder=freeze_encoder)
    if ckpt is not None:
        load_pretrained(net, SAM_VIT_B, convert_sam(num_classes, in_channels), local=ckpt)
    return net
