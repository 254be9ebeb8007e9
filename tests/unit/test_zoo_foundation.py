"""Foundation models (DINOv2, SAM, Mask2Former): heads, frozen encoders, and pretrained-weight converters tested on
checkpoints written locally in each official key layout (no downloads)."""
from __future__ import annotations

import copy
import math
import sys

import pytest
import torch

from segarena import SegarenaError
from segarena.models import create_model
from segarena.models.zoo import dinov2, mask2former, sam


# --------------------------------------------------------------------------------------------------------- DINOv2
def _official_dinov2(tmp_path, seed: int = 1):
    """A ViT-S/14 checkpoint in the facebookresearch/dinov2 layout (timm keys + ``mask_token``), random values."""
    torch.manual_seed(seed)
    src = dinov2.DinoV2Seg("vit_small_patch14_dinov2", "linear", 2).encoder.state_dict()
    state = {k: v.clone() for k, v in src.items()}
    state["mask_token"] = torch.randn(1, 384)
    assert state["pos_embed"].shape == (1, 37 * 37 + 1, 384)  # trained at 518 px, as the official file
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(state, path)
    return path, state


def test_dinov2_official_checkpoint_loads_strictly(tmp_path):
    path, state = _official_dinov2(tmp_path)
    net = dinov2.build_dinov2("s", "dpt", 3, pretrained=str(path))
    own = net.encoder.state_dict()
    assert set(own) == set(state) - {"mask_token"}
    for key in own:
        assert torch.equal(own[key], state[key]), key
    # one input channel: the RGB patch kernel is summed (timm's rule), everything else unchanged
    gray = dinov2.build_dinov2("s", "linear", 1, in_channels=1, pretrained=str(path))
    assert torch.allclose(gray.encoder.patch_embed.proj.weight, state["patch_embed.proj.weight"].sum(1, keepdim=True))
    assert torch.equal(gray.encoder.blocks[3].ls1.gamma, state["blocks.3.ls1.gamma"])


def test_dinov2_mismatched_checkpoint_is_a_clear_error(tmp_path):
    path, state = _official_dinov2(tmp_path)
    del state["blocks.11.mlp.fc2.weight"]
    torch.save(state, path)
    with pytest.raises(SegarenaError, match=r"missing: blocks\.11\.mlp\.fc2\.weight"):
        dinov2.build_dinov2("s", "linear", 2, pretrained=str(path))


def test_dinov2_freeze_encoder_from_config_trains_the_head_only():
    from segarena.config import ModelConfig, RunSpec, apply_overrides

    spec = apply_overrides(RunSpec(model=ModelConfig(name="dinov2-s-linear")), ["model.kwargs.freeze_encoder=true"])
    assert spec.model.kwargs == {"freeze_encoder": True}
    model = create_model(spec.model.name, 2, **spec.model.kwargs).train()
    enc = model.net.encoder
    assert not enc.training and model.net.head.training  # eval-mode encoder even in training mode
    assert not any(p.requires_grad for p in enc.parameters())
    model(torch.randn(2, 3, 56, 42)).mean().backward()
    assert all(p.grad is None for p in enc.parameters())
    assert all(p.grad is not None for p in model.net.head.parameters())


def test_dinov2_heads_predict_at_their_strides():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 5 * 14, 7 * 14)  # odd patch grid 5x7
    dpt = dinov2.build_dinov2("s", "dpt", 3).eval()
    lin = dinov2.build_dinov2("s", "linear", 3).eval()
    with torch.no_grad():
        assert dpt(x).shape == (1, 3, 5 * 8, 7 * 8)  # reassembled at 4x the grid, last fusion x2
        assert lin(x).shape == (1, 3, 5, 7)  # patch grid
    # the DPT head reads four distinct blocks, the linear head the last one
    assert dpt.layers == [2, 5, 8, 11] and lin.layers == [11]


# ------------------------------------------------------------------------------------------------------------ SAM
#: keys and shapes of the official sam_vit_b_01ec64.pth (facebookresearch/segment-anything), an independent anchor
SAM_ANCHORS = {
    "image_encoder.pos_embed": (1, 64, 64, 768),
    "image_encoder.blocks.0.attn.rel_pos_h": (27, 64),
    "image_encoder.blocks.2.attn.rel_pos_w": (127, 64),
    "image_encoder.blocks.0.mlp.lin1.weight": (3072, 768),
    "image_encoder.neck.0.weight": (256, 768, 1, 1),
    "image_encoder.neck.3.bias": (256,),
    "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": (2, 128),
    "prompt_encoder.point_embeddings.3.weight": (1, 256),
    "prompt_encoder.no_mask_embed.weight": (1, 256),
    "mask_decoder.iou_token.weight": (1, 256),
    "mask_decoder.mask_tokens.weight": (4, 256),
    "mask_decoder.transformer.layers.0.self_attn.q_proj.weight": (256, 256),
    "mask_decoder.transformer.layers.1.cross_attn_token_to_image.k_proj.weight": (128, 256),
    "mask_decoder.transformer.layers.1.cross_attn_image_to_token.out_proj.weight": (256, 128),
    "mask_decoder.transformer.layers.0.mlp.lin1.weight": (2048, 256),
    "mask_decoder.transformer.layers.1.norm4.weight": (256,),
    "mask_decoder.transformer.final_attn_token_to_image.v_proj.weight": (128, 256),
    "mask_decoder.transformer.norm_final_attn.bias": (256,),
    "mask_decoder.output_upscaling.0.weight": (256, 64, 2, 2),
    "mask_decoder.output_upscaling.1.weight": (64,),
    "mask_decoder.output_upscaling.3.weight": (64, 32, 2, 2),
    "mask_decoder.output_hypernetworks_mlps.0.layers.2.weight": (32, 256),
}


@pytest.fixture(scope="module")
def sam_net() -> sam.SamSemantic:
    """One randomly initialised SAM (3 classes), shared: building a 93M-parameter net is the slow part."""
    torch.manual_seed(0)
    return sam.SamSemantic(num_classes=3).eval()


@pytest.fixture(scope="module")
def sam_official():
    """facebookresearch/segment-anything's ViT-B SAM with its own (seeded) random initialisation, shared."""
    torch.manual_seed(0)
    return _official_package().sam_model_registry["vit_b"]().eval()


def _official_sam(official) -> dict[str, torch.Tensor]:
    """A checkpoint in the official layout: every key and shape of ``segment_anything``'s own ViT-B SAM (the code
    that wrote ``sam_vit_b_01ec64.pth``). Every tensor is a distinct constant broadcast from one element, so the
    file stays small and each key's destination is visible; the Fourier frequencies and point embeddings are
    random (the class prompts are computed from them)."""
    shapes = {k: v.shape for k, v in official.state_dict().items()}
    state = {k: torch.full((1,), 0.001 * (i + 1)).expand(shapes[k]) for i, k in enumerate(sorted(shapes))}
    g = torch.Generator().manual_seed(3)
    state["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = torch.randn(2, 128, generator=g)
    for i in range(4):
        state[f"prompt_encoder.point_embeddings.{i}.weight"] = torch.randn(1, 256, generator=g)
    return state


def _official_package():
    """facebookresearch/segment-anything (the ``segment-anything`` test extra): the tests compare against it."""
    try:
        import segment_anything
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        raise AssertionError("segment-anything is missing: pip install -e '.[test]'") from exc
    return segment_anything


def test_sam_official_checkpoint_converts_and_loads_strictly(tmp_path, sam_official):
    state = _official_sam(sam_official)
    assert len(state) == 314  # the official ViT-B state dict (as in sam_vit_b_01ec64.pth)
    for key, shape in SAM_ANCHORS.items():
        assert tuple(state[key].shape) == shape, key
    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(state, path)
    assert path.stat().st_size < 5e6
    loaded = sam.build_sam_vit_b(3, pretrained=str(path))
    own = loaded.state_dict()
    assert torch.equal(own["encoder.blocks.0.mlp.fc1.weight"], state["image_encoder.blocks.0.mlp.lin1.weight"])
    assert torch.equal(own["encoder.neck.0.weight"], state["image_encoder.neck.0.weight"])
    assert torch.equal(own["decoder.hypernet.layers.2.weight"],
                       state["mask_decoder.output_hypernetworks_mlps.0.layers.2.weight"])
    for key in own:  # every decoder/encoder tensor came from its official counterpart
        if key.startswith("encoder."):
            assert torch.equal(own[key], state["image_encoder." + key[8:].replace(".mlp.fc", ".mlp.lin")]), key
        elif key.startswith("decoder.") and not key.startswith("decoder.hypernet."):
            assert torch.equal(own[key], state["mask_decoder." + key[8:]]), key
    # each class prompt starts as SAM's box prompt around the whole image: corners (0,0) and (1,1)
    gauss = state["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]

    def pe(x: float, y: float) -> torch.Tensor:
        p = 2 * math.pi * (torch.tensor([2.0 * x - 1, 2.0 * y - 1]) @ gauss)
        return torch.cat([p.sin(), p.cos()])

    box = torch.stack([pe(0, 0) + state["prompt_encoder.point_embeddings.2.weight"][0],
                       pe(1, 1) + state["prompt_encoder.point_embeddings.3.weight"][0]])
    for k in range(3):
        assert torch.allclose(loaded.class_prompts[k], box, atol=1e-6)
    assert torch.equal(loaded.no_mask_embed, state["prompt_encoder.no_mask_embed.weight"])
    # a checkpoint in timm's layout is refused, with the missing keys named
    torch.save({k.replace("image_encoder.", ""): v for k, v in state.items()}, path)
    with pytest.raises(SegarenaError, match="missing: encoder"):
        sam.build_sam_vit_b(3, pretrained=str(path))


@pytest.fixture(scope="module")
def sam_pair(sam_official, sam_net):
    """The official SAM, and ours (3 classes) with the official state dict loaded through the converter
    (strictly)."""
    from segarena.models.weights import load_into

    net = copy.deepcopy(sam_net).eval()
    load_into(net, sam.convert_sam(3)(sam_official.state_dict()), what="SamSemantic")
    return sam_official, net


# SAM's box encoder adds 0.5 to the coordinates: this box encodes the corners (0, 0) and (1024, 1024), i.e. the
# whole image, which is what each class prompt starts from
_WHOLE_IMAGE_BOX = torch.tensor([[-0.5, -0.5, 1023.5, 1023.5]])


def test_sam_prompt_and_mask_decoder_match_the_official_implementation(sam_pair):
    """Against facebookresearch/segment-anything: positional encoding, the class prompts' box initialisation
    and the mask decoder give the official outputs."""
    ref, net = sam_pair
    with torch.no_grad():
        sparse, dense = ref.prompt_encoder(points=None, boxes=_WHOLE_IMAGE_BOX, masks=None)
        assert torch.allclose(net.dense_pe(64, 64), ref.prompt_encoder.get_dense_pe(), atol=1e-6)
        for k in range(3):
            assert torch.allclose(net.class_prompts[k], sparse[0], atol=1e-5)
        assert torch.equal(dense[0, :, 0, 0], net.no_mask_embed[0])
        emb = torch.randn(1, 256, 64, 64)
        want = ref.mask_decoder(image_embeddings=emb, image_pe=ref.prompt_encoder.get_dense_pe(),
                                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                multimask_output=False)[0]
        got = net.decoder(emb, net.dense_pe(64, 64), net.no_mask_embed.reshape(1, 256, 1, 1), sparse)
    assert torch.allclose(got, want[:, 0], atol=1e-5)


def test_sam_image_encoder_layers_match_the_official_implementation(sam_pair):
    """Every layer of the image encoder (patch embedding, the 12 windowed/global blocks, the neck) gives the
    official layer's output on the same input, on an 8x8 patch grid (128 px) so the test stays fast: the
    windowed blocks pad to their 14x14 windows and the global blocks interpolate their relative-position tables,
    in both implementations. The whole model at SAM's 1024 px is checked in the slow tier."""
    ref, net = sam_pair
    enc, off = net.encoder, ref.image_encoder
    assert len(enc.blocks) == len(off.blocks) == 12
    torch.manual_seed(1)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        tokens = off.patch_embed(x)  # [1, 8, 8, 768]
        torch.testing.assert_close(enc.patch_embed(x), tokens)
        torch.testing.assert_close(enc.pos_embed, off.pos_embed)  # at 1024 px both add it unchanged
        for i, (ours, theirs) in enumerate(zip(enc.blocks, off.blocks)):
            want = theirs(tokens)
            torch.testing.assert_close(ours(tokens), want, rtol=1e-4, atol=1e-4, msg=f"block {i}")
            tokens = want
        features = tokens.permute(0, 3, 1, 2)
        torch.testing.assert_close(enc.neck(features), off.neck(features), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_sam_whole_model_matches_the_official_implementation_at_1024(sam_pair):
    """The whole network at SAM's native 1024 px: official image encoder -> prompt encoder (a whole-image box)
    -> mask decoder (single-mask output) against our forward pass (about 1 min on 2 idle CPU cores)."""
    ref, net = sam_pair
    torch.manual_seed(2)
    x = torch.randn(1, 3, 1024, 1024)
    with torch.no_grad():
        emb = ref.image_encoder(x)
        sparse, dense = ref.prompt_encoder(points=None, boxes=_WHOLE_IMAGE_BOX, masks=None)
        want = ref.mask_decoder(image_embeddings=emb, image_pe=ref.prompt_encoder.get_dense_pe(),
                                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                multimask_output=False)[0]  # [1, 1, 256, 256] low-resolution logits
        got = net(x)  # [1, 3, 256, 256]: every class prompt starts as the same whole-image box
    assert got.shape == (1, 3, 256, 256)
    for k in range(3):
        torch.testing.assert_close(got[:, k], want[:, 0], rtol=1e-3, atol=1e-3)


def test_sam_classes_are_decoded_independently(sam_net):
    net = copy.deepcopy(sam_net)
    net.image_size = 64
    x = torch.randn(2, 3, 48, 40)  # resized to 64x64 inside: logits at 16x16
    with torch.no_grad():
        net.class_prompts[2].copy_(net.class_prompts[0])
        y = net(x)
        assert y.shape == (2, 3, 16, 16)
        assert torch.allclose(y[:, 0], y[:, 2], atol=1e-5) and not torch.allclose(y[:, 0], y[:, 1])
        net.class_prompts[1].add_(1.0)
        y2 = net(x)
    assert torch.allclose(y2[:, 0], y[:, 0], atol=1e-6) and not torch.allclose(y2[:, 1], y[:, 1])
    assert not torch.allclose(y[0], y[1])  # images are not mixed up either


def test_sam_runs_at_the_input_size_and_checks_image_size():
    torch.manual_seed(0)
    model = create_model("sam-vit-b", 2, freeze_encoder=True).train()
    assert not model.net.encoder.training
    y = model(torch.randn(1, 3, 48, 80))  # 3x5 patch grid: position embeddings resampled
    assert y.shape == (1, 2, 48, 80)
    y.mean().backward()
    assert model.net.class_prompts.grad is not None
    assert all(p.grad is None for p in model.net.encoder.parameters())
    with pytest.raises(SegarenaError, match="multiple of 16"):
        create_model("sam-vit-b", 2, image_size=100)


def test_sam_pretrained_offline_fails_clearly():
    with pytest.raises(SegarenaError, match="sam_vit_b_01ec64.pth"):
        create_model("sam-vit-b", 1, pretrained=True)


# ---------------------------------------------------------------------------------------------------- Mask2Former
def test_mask2former_without_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if not installed
    with pytest.raises(SegarenaError, match=r"pip install segarena\[transformers\]"):
        create_model("mask2former-swin-t", 1)


def test_mask2former_semantic_logits_drop_the_null_class():
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    net = mask2former.Mask2FormerSemantic(2).eval()
    assert len(net.m2f.model.transformer_module.decoder.layers) == 9  # official: 9 masked-attention layers
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        y = net(x)
        out = net.m2f(pixel_values=x)
    assert y.shape == (1, 2, 16, 24)  # 1/4 resolution
    probs = out.class_queries_logits.softmax(-1)
    assert probs.shape[-1] == 3  # 2 classes + no-object
    expected = (probs[0, :, 1, None, None] * out.masks_queries_logits[0]).sum(0)
    assert torch.allclose(y[0, 1], expected, atol=1e-5)


def test_mask2former_hub_checkpoint_converts_and_loads(tmp_path):
    tf = pytest.importorskip("transformers")
    from safetensors.torch import load_file

    torch.manual_seed(0)
    ade = tf.Mask2FormerForUniversalSegmentation(mask2former.mask2former_config(150)).half()
    ade.save_pretrained(tmp_path)  # transformers writes the hub (transformers 4) key layout
    path = tmp_path / "model.safetensors"
    saved = load_file(str(path))
    legacy = "model.pixel_level_module.encoder.encoder.layers.0.blocks.0.attention.self.query.weight"
    assert legacy in saved and saved["class_predictor.weight"].shape == (151, 256)
    net = mask2former.build_mask2former_swin_t(2, pretrained=str(path))
    own = net.m2f.state_dict()
    swin = "model.pixel_level_module.encoder."
    query = ("layers.0.blocks.0.attention.q_proj.weight", "layers.0.blocks.0.attention.self.query.weight")
    for theirs, ours in [(legacy, next(k for k in own if k.endswith(query))),
                         (swin + "embeddings.patch_embeddings.projection.weight",
                          next(k for k in own if k.endswith("patch_embeddings.projection.weight"))),
                         ("model.transformer_module.queries_embedder.weight",) * 2,
                         ("model.pixel_level_module.decoder.mask_projection.weight",) * 2]:
        assert torch.equal(own[ours], saved[theirs].float()), ours
    assert own["class_predictor.weight"].shape == (3, 256)  # our head, not ADE's 151 outputs
