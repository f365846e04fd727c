"""The assembled PhysioWave network (docs/architecture.md; the data flow in §0).

``decompose`` → ``[B, (L+1)·C, T]`` spectrum; patch tokens + positional code; rotary transformer encoder;
reconstruction head (pretraining: the original MLP head, BERT-style, or an MAE-style transformer decoder that
lets the encoder see only the visible tokens) and an optional classification head. Attribute names follow the
original state-dict keys, so original checkpoints load with ``load_state_dict`` as they are.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .decoder import MaskedDecoder, decoder_heads
from .decomposition import SoftGatedWaveletDecomposition
from .embedding import PatchEmbed, PositionalEmbedding1d, sincos_2d, table_dtype
from .heads import ClassificationHead, ReconstructionHead, pool_tokens
from .input_norm import INPUT_NORMS, normalize_input
from .limits import check_architecture
from .masking import IMPORTANCE_RATIO, MASK_RATIO, MASKING, make_mask
from .objective import FixedWaveletTransform, band_rms, objective_loss, patch_targets, prediction_size
from .transformer import TransformerEncoder, init_weights

__all__ = ["PhysioWave", "DEFAULT_WAVELETS", "DECODERS", "LEGACY_CONFIG"]

DEFAULT_WAVELETS = ("db4", "db6", "sym4", "coif3")
DECODERS = ("mlp", "transformer")
# Settings that new models have and configurations written before them (the original release included) lack:
# such a configuration keeps computing its original function (docs/architecture.md §13).
LEGACY_CONFIG = {"input_norm": "none", "objective": "original", "pooling": "mean", "decoder": "mlp"}


def _patch_length(patch_size: int | Sequence[int]) -> int:
    """The int P, also from the original's ``(1, P)`` tuple."""
    if isinstance(patch_size, int):
        return patch_size
    size = tuple(int(p) for p in patch_size)
    if len(size) != 2 or size[0] != 1:
        raise ValueError(f"patch_size must be an int P or (1, P), got {patch_size!r}")
    return size[1]


class PhysioWave(nn.Module):
    """PhysioWave wavelet-transformer. Input ``[B, C, T]`` with T a multiple of ``patch_size``.

    Keyword names and meanings are those of the original training flags. ``decoder`` picks the pretraining
    head: ``"mlp"`` (the original: mask tokens in the encoder, MLP head) or ``"transformer"`` (MAE-style: the
    encoder sees the visible tokens only, a ``decoder_depth``-block decoder of width ``decoder_dim``, default
    embed_dim // 2, predicts every patch).

    Three settings make new models differ from the original release (whose checkpoints load with
    :data:`LEGACY_CONFIG`): ``input_norm="rms"`` makes the output independent of the input's units
    (:mod:`.input_norm`), ``objective="bands"`` pretrains against a fixed wavelet target that cannot collapse
    (:mod:`.objective`), and ``pooling="bands"`` gives the classifier each band row's mean token rather than one mean.
    docs/architecture.md §0 gives the data flow, §13 what original checkpoints keep.
    """

    def __init__(
        self,
        in_channels: int = 12,
        max_level: int = 3,
        wave_kernel_size: int = 24,
        wavelet_names: Sequence[str] | None = None,
        patch_size: int | Sequence[int] = 64,
        embed_dim: int = 384,
        depth: int = 8,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        pos_embed_type: str = "2d",
        num_classes: int | None = None,
        head_hidden_dim: int | Sequence[int] | None = None,
        head_dropout: float = 0.1,
        pooling: str = "bands",
        use_separate_channel: bool = True,
        decoder: str = "mlp",
        decoder_depth: int = 2,
        decoder_dim: int | None = None,
        input_norm: str = "rms",
        objective: str = "bands",
    ):
        super().__init__()
        check_architecture(dict(in_channels=in_channels, max_level=max_level, wave_kernel_size=wave_kernel_size,
                                patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                                mlp_ratio=mlp_ratio, dropout=dropout, num_classes=num_classes,
                                head_hidden_dim=head_hidden_dim, head_dropout=head_dropout, decoder=decoder,
                                decoder_depth=decoder_depth, decoder_dim=decoder_dim))
        if pos_embed_type not in ("1d", "2d"):
            raise ValueError(f"pos_embed_type must be '1d' or '2d', got {pos_embed_type!r}")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        wavelet_names = list(wavelet_names) if wavelet_names else list(DEFAULT_WAVELETS)
        self.patch_size = _patch_length(patch_size)
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {input_norm!r}")
        out_size = prediction_size(objective, self.patch_size)
        self.config = dict(
            in_channels=in_channels, max_level=max_level, wave_kernel_size=wave_kernel_size,
            wavelet_names=wavelet_names, patch_size=self.patch_size, embed_dim=embed_dim, depth=depth,
            num_heads=num_heads, mlp_ratio=mlp_ratio, dropout=dropout, pos_embed_type=pos_embed_type,
            num_classes=num_classes,
            head_hidden_dim=list(head_hidden_dim) if isinstance(head_hidden_dim, Sequence) else head_hidden_dim,
            head_dropout=head_dropout, pooling=pooling, use_separate_channel=use_separate_channel, decoder=decoder,
            decoder_depth=decoder_depth, decoder_dim=decoder_dim, input_norm=input_norm, objective=objective,
        )
        self.in_channels = in_channels
        self.num_bands = (max_level + 1) * in_channels  # F, rows of the spectrum

        self.wavelet_decomp = SoftGatedWaveletDecomposition(
            in_channels, max_level, wave_kernel_size, wavelet_names, use_separate_channel
        )
        self.patch_embed = PatchEmbed(self.patch_size, embed_dim)
        if pos_embed_type == "1d":
            self.pos_embed = PositionalEmbedding1d(embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.encoder = TransformerEncoder(embed_dim, depth, num_heads, mlp_ratio, dropout)
        if decoder == "transformer":
            width = embed_dim // 2 if decoder_dim is None else decoder_dim
            pretrain: nn.Module = MaskedDecoder(embed_dim, out_size, width, decoder_depth, decoder_heads(width),
                                                mlp_ratio, dropout)
        else:
            pretrain = ReconstructionHead(embed_dim, out_size, [embed_dim], dropout)
        if objective != "original":
            self.target_transform = FixedWaveletTransform(in_channels, max_level, wave_kernel_size, wavelet_names[0])
        heads: dict[str, nn.Module] = {"pretrain": pretrain}
        if num_classes:
            heads["classification"] = ClassificationHead(embed_dim, num_classes, head_hidden_dim, head_dropout, pooling,
                                                         self.num_bands)
        self.task_heads = nn.ModuleDict(heads)
        self._pos_cache: dict[tuple, torch.Tensor] = {}
        self.apply(init_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    # ----------------------------------------------------------------------------------------------- input
    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """Validate ``[B, C, T]`` and cast to the parameters' dtype (float64 and bfloat16 inputs are accepted)."""
        if x.ndim != 3:
            raise ValueError(f"expected input [B, C, T], got shape {tuple(x.shape)}")
        B, C, T = x.shape
        if C != self.in_channels:
            raise ValueError(f"expected {self.in_channels} channels (in_channels), "
                             f"got {C} in input of shape {tuple(x.shape)}")
        P = self.patch_size
        if T < P or T % P:
            lower, upper = (T // P) * P, -(-T // P) * P
            fix = f"crop to {lower} or pad to {upper}" if lower else f"pad to {upper}"
            raise ValueError(f"input length {T} is not a positive multiple of patch_size {P}: {fix} samples")
        return x.to(self.mask_token.dtype)

    def num_tokens(self, length: int) -> int:
        """Tokens for an input of ``length`` samples: F · T/P."""
        return self.num_bands * (length // self.patch_size)

    # ----------------------------------------------------------------------------------------------- stages
    def decompose(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` → wavelet spectrum ``[B, (L+1)·C, T]`` of the normalised input (docs/architecture.md §6)."""
        return self.wavelet_decomp(self.normalize(x))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Checked ``[B, C, T]`` input after the model's ``input_norm`` (the identity for original checkpoints)."""
        return normalize_input(self.check_input(x), self.config["input_norm"])

    def patchify(self, spec: torch.Tensor) -> torch.Tensor:
        """``[B, F, T]`` → ``[B, F·T/P, P]``, in token order."""
        return spec.unflatten(-1, (-1, self.patch_size)).flatten(1, 2)

    def positional_embedding(self, rows: int, cols: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``[rows·cols, D]`` code added to the tokens; 2-D tables are cached per shape, device and dtype."""
        if hasattr(self, "pos_embed"):
            return self.pos_embed(rows * cols).to(dtype)
        key = (rows, cols, device, dtype)
        if key not in self._pos_cache:
            # cast first: MPS has no float64
            self._pos_cache[key] = sincos_2d(rows, cols, self.mask_token.shape[-1]).to(dtype).to(device)
        return self._pos_cache[key]

    def tokenize(self, spec: torch.Tensor) -> torch.Tensor:
        """Spectrum ``[B, F, T]`` → position-encoded tokens ``[B, N, D]``."""
        tokens = self.patch_embed(spec)
        pos = self.positional_embedding(spec.shape[1], spec.shape[2] // self.patch_size, spec.device,
                                        table_dtype(tokens.dtype))
        return tokens + pos

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` → encoder tokens ``[B, N, D]`` after the final LayerNorm, nothing masked."""
        return self.encoder(self.tokenize(self.decompose(x)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` → pooled encoder features ``[B, D]`` (``[B, F·D]`` for ``bands``; the ``pooling`` of the
        config), the
        classification head's input."""
        return pool_tokens(self.encode(x), self.config["pooling"], self.num_bands)

    @property
    def mae(self) -> bool:
        """True when pretraining uses the MAE-style transformer decoder (the encoder sees visible tokens only)."""
        return isinstance(self.task_heads["pretrain"], MaskedDecoder)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` → reconstruction head output ``[B, N, K]`` (K of :meth:`forward_pretrain`) on the unmasked
        encoder output."""
        if not self.mae:
            return self.task_heads["pretrain"](self.encode(x))
        spec = self.decompose(x)
        latent = self.encoder(self.tokenize(spec))
        B, N, _ = latent.shape
        ids = torch.arange(N, device=latent.device).expand(B, N)  # every token visible
        return self.task_heads["pretrain"](latent, ids, N, spec.shape[1], spec.shape[2] // self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` → logits ``[B, num_classes]``."""
        if "classification" not in self.task_heads:
            raise RuntimeError("this model has no classification head (num_classes=None): "
                               "use encode() or reconstruct()")
        return self.task_heads["classification"](self.encode(x))

    def forward_pretrain(
        self,
        x: torch.Tensor,
        mask_ratio: float = MASK_RATIO,
        masking: str = MASKING,
        importance_ratio: float = IMPORTANCE_RATIO,
        generator: torch.Generator | None = None,
        detach_target: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masked pretraining pass → (prediction ``[B, N, K]``, target ``[B, N, K]``, mask bool ``[B, N]``).

        ``objective="original"``: K = P, the target is the patched spectrum of the model's own front-end, not
        detached unless ``detach_target`` (so the front-end can shrink its own target).
        ``objective="bands"``: K = P + 1, the target comes from the fixed wavelet transform (never has a gradient).
        With the transformer decoder the encoder runs on the visible tokens only (MAE); the mask is the same.
        See docs/architecture.md §10 and §12.
        """
        pred, target, mask, _ = self._pretrain_pass(x, mask_ratio, masking, importance_ratio, generator, detach_target)
        return pred, target, mask

    def pretrain_loss(
        self,
        x: torch.Tensor,
        mask_ratio: float = MASK_RATIO,
        masking: str = MASKING,
        importance_ratio: float = IMPORTANCE_RATIO,
        generator: torch.Generator | None = None,
        detach_target: bool = False,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``[B, C, T]`` → (loss, per-sample float64 sums ``[B]`` of :func:`objective_loss` plus
        ``band_rms`` ``[B, L+1]``:
        the RMS of each band of the learnable front-end, whose fall would show a collapse)."""
        pred, target, mask, spec = self._pretrain_pass(x, mask_ratio, masking, importance_ratio, generator,
                                                       detach_target)
        loss, sums = objective_loss(self.config["objective"], pred, target, mask)
        sums["band_rms"] = band_rms(spec, self.in_channels)
        return loss, sums

    def _pretrain_pass(self, x, mask_ratio, masking, importance_ratio, generator, detach_target):
        x = self.normalize(x)
        spec = self.wavelet_decomp(x)
        patches = self.patchify(spec)
        tokens = self.tokenize(spec)
        if self.config["objective"] == "original":
            target = patches.detach() if detach_target else patches
        else:
            with torch.no_grad():
                target = patch_targets(self.patchify(self.target_transform(x)).float())
        mask = make_mask(masking, patches.detach(), tokens.detach(), mask_ratio, importance_ratio, generator)
        if self.mae:
            visible = tokens.shape[1] - int(tokens.shape[1] * mask_ratio)  # every strategy masks int(N · ratio) tokens
            pred = self._decode_visible(tokens, mask, visible, spec.shape[1], spec.shape[2] // self.patch_size)
        else:
            # Masked tokens are replaced after the positional code is added, as in the original.
            tokens = torch.where(mask.unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
            pred = self.task_heads["pretrain"](self.encoder(tokens))
        return pred, target, mask, spec

    def _decode_visible(self, tokens: torch.Tensor, mask: torch.Tensor, visible_count: int, rows: int, cols: int
                        ) -> torch.Tensor:
        """MAE pass: position-encoded tokens ``[B, N, D]``, mask bool ``[B, N]`` with ``visible_count`` unmasked tokens
        in
        every sample → predictions ``[B, N, P]``. A stable sort puts the unmasked positions first, in increasing order
        (the count comes from the mask ratio, not from the mask, so the step has no host sync).
        """
        B, N, D = tokens.shape
        order = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)  # [B, N]: unmasked ascending, then masked
        ids_keep = order[:, :visible_count]  # [B, V]
        visible = tokens.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, D))  # [B, V, D]
        return self.task_heads["pretrain"](self.encoder(visible, positions=ids_keep), ids_keep, N, rows, cols)

    def set_grad_checkpointing(self, enable: bool = True) -> "PhysioWave":
        """Recompute encoder (and transformer-decoder) blocks in backward (activation checkpointing): training memory
        drops ~2-3×."""
        self.encoder.grad_checkpointing = enable
        if self.mae:
            self.task_heads["pretrain"].transformer.grad_checkpointing = enable
        return self

    def compile_regions(self, **compile_kwargs: Any) -> "PhysioWave":
        """``torch.compile`` the repeated regions in place: the wavelet decomposition and each transformer block
        (encoder,
        and the transformer decoder's). Blocks of one stack share their code, so a stack compiles once; heads, masking
        and the loss stay eager, and parameter names (the state dict) are unchanged. ``compile_kwargs`` go to
        ``torch.compile`` (e.g. ``backend``)."""
        regions: list[nn.Module] = [self.wavelet_decomp, *self.encoder.blocks]
        if self.mae:
            regions += list(self.task_heads["pretrain"].transformer.blocks)
        for region in regions:
            region.compile(**compile_kwargs)
        return self

    def unused_parameter_names(self) -> list[str]:
        """Parameters that never receive a gradient: level 0's cross-scale attention and its scale (no earlier level);
        with the transformer decoder also the encoder's ``mask_token`` (the encoder never sees masked tokens)."""
        dead = [f"wavelet_decomp.sub_ffn.0.{n}" for n, _ in self.wavelet_decomp.sub_ffn[0].named_parameters()
                if not n.startswith("base.")]
        return dead + ["mask_token"] if self.mae else dead

