"""A small transformer over token ids, registered as the base architecture "transformer".

Input is a (batch, max_len) int64 tensor of token ids; real tokens are 0..vocab_size-1 and the
padding id is `vocab_size` (see `pad_id`), which no real token uses. Padding is masked out of every
attention row by a key padding mask, the future by a causal mask (`causal=True`), both with -inf
added to the scores, never by multiplying scores by 0. Outputs are next-token logits per position
(`output="tokens"`) or one classification per sequence (`output="sequence"`, pooled over real tokens
only: their mean, or the last real token).

As a frozen base: every weight matrix is an nn.Linear, the token and learned position embeddings
included (a token's embedding is a column of `embed.weight`), so BaseNetwork draws all of them with
`init_weight` from the spec's seed, masks all of them and hashes all of them into the fingerprint.
What BaseNetwork does not mask is frozen at constants fixed by this code: biases (when `bias=True`)
are 0 and LayerNorm gains 1 and shifts 0. They are deterministic, so the base is still rebuilt bit for
bit from its spec, but a mask search cannot change them: a frozen base's biases are useless zeros,
and its LayerNorms are plain normalisations. With trained weights (`trainable_copy`) every parameter
is trained, biases and LayerNorm affines included.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

NORMS = ("pre", "post")
POSITIONS = ("learned", "sinusoidal")
OUTPUTS = ("tokens", "sequence")
POOLS = ("mean", "last")


def _check_choice(option: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"base.options.{option}: got {value!r}; allowed: {', '.join(allowed)}")


def sinusoidal_positions(max_len: int, d_model: int) -> torch.Tensor:
    """The fixed sin/cos position table of "Attention is all you need", (max_len, d_model)."""
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: d_model // 2])
    return table.float()


class Attention(nn.Module):
    """Multi-head self-attention with a boolean mask of allowed (query, key) pairs."""

    def __init__(self, d_model: int, heads: int, bias: bool) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"base.options.d_model={d_model} must be a multiple of heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self.record = False  # keep the last attention weights (for the census)
        self.weights: torch.Tensor | None = None

    def forward(self, h: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, t, d = h.shape
        q, k, v = self.qkv(h).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d // self.heads)
        scores = scores.masked_fill(~allowed, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        if self.record:
            self.weights = weights.detach()
        return self.out((weights @ v).transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """One transformer layer: attention then a ReLU MLP, each with a residual and a LayerNorm."""

    def __init__(self, d_model: int, heads: int, d_ff: int, norm: str, bias: bool) -> None:
        super().__init__()
        self.pre_norm = norm == "pre"
        self.norm1 = nn.LayerNorm(d_model, bias=bias)
        self.attn = Attention(d_model, heads, bias)
        self.norm2 = nn.LayerNorm(d_model, bias=bias)
        self.fc1 = nn.Linear(d_model, d_ff, bias=bias)
        self.fc2 = nn.Linear(d_ff, d_model, bias=bias)

    def mlp(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(h)))

    def forward(self, h: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            h = h + self.attn(self.norm1(h), allowed)
            return h + self.mlp(self.norm2(h))
        h = self.norm1(h + self.attn(h, allowed))
        return self.norm2(h + self.mlp(h))


class Transformer(nn.Module):
    """Token (+ position) embeddings, `layers` blocks, and a linear head per position or per sequence."""

    def __init__(
        self,
        max_len: int,
        num_outputs: int,
        *,
        vocab_size: int,
        d_model: int,
        heads: int,
        layers: int,
        d_ff: int,
        causal: bool,
        norm: str,
        bias: bool,
        positions: str,
        output: str,
        pool: str,
    ) -> None:
        super().__init__()
        for option, value, allowed in (
            ("norm", norm, NORMS),
            ("positions", positions, POSITIONS),
            ("output", output, OUTPUTS),
            ("pool", pool, POOLS),
        ):
            _check_choice(option, value, allowed)
        self.max_len, self.vocab_size, self.causal = max_len, vocab_size, bool(causal)
        self.output, self.pool = output, pool
        self.embed = nn.Linear(vocab_size + 1, d_model, bias=False)  # column vocab_size: padding
        self.pos = nn.Linear(max_len, d_model, bias=False) if positions == "learned" else None
        self.register_buffer("sinusoid", sinusoidal_positions(max_len, d_model), persistent=False)
        self.blocks = nn.ModuleList(Block(d_model, heads, d_ff, norm, bias) for _ in range(layers))
        self.final_norm = nn.LayerNorm(d_model, bias=bias) if norm == "pre" else nn.Identity()
        self.head = nn.Linear(d_model, num_outputs, bias=bias)
        with torch.no_grad():  # deterministic values for what a frozen base does not draw or mask
            for m in self.modules():
                if isinstance(m, nn.Linear) and m.bias is not None:
                    m.bias.zero_()

    @property
    def pad_id(self) -> int:
        """The padding token id: one past the last real token."""
        return self.vocab_size

    def hidden_names(self) -> list[str]:
        """Module names whose outputs are the residual stream after each block."""
        return [f"blocks.{i}" for i in range(len(self.blocks))]

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token plus position embeddings, (batch, length, d_model)."""
        if tokens.dim() != 2 or tokens.dtype != torch.int64:
            raise ValueError(
                f"transformer input must be (batch, length) int64 token ids, got {tokens.dtype} "
                f"{tuple(tokens.shape)}"
            )
        t = tokens.shape[1]
        if t > self.max_len:
            raise ValueError(
                f"sequences of length {t} exceed max_len={self.max_len}; raise the base's input_shape"
            )
        h = F.embedding(tokens, self.embed.weight.t())
        positions = self.pos.weight.t()[:t] if self.pos is not None else self.sinusoid[:t]
        return h + positions

    def allowed(self, real: torch.Tensor) -> torch.Tensor:
        """(batch, 1, T, T) booleans: query i may attend to key j (real key, not in the future, or j = i).

        A query always sees itself, so a padding row (whose output is never used) is never all -inf.
        """
        t = real.shape[1]
        ok = real[:, None, None, :].expand(-1, 1, t, t)
        if self.causal:
            ok = ok & torch.ones(t, t, dtype=torch.bool, device=real.device).tril()
        return ok | torch.eye(t, dtype=torch.bool, device=real.device)

    def from_embeddings(self, h: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """The network from input embeddings on: `real` marks the real (non-padding) positions."""
        allowed = self.allowed(real)
        for block in self.blocks:
            h = block(h, allowed)
        h = self.final_norm(h)
        if self.output == "tokens":
            return self.head(h)
        if self.pool == "mean":
            w = real.to(h.dtype)[..., None]
            pooled = (h * w).sum(1) / w.sum(1).clamp(min=1.0)
        else:
            last = (real.long().cumsum(1) * real).argmax(1)  # index of the last real token
            pooled = h[torch.arange(len(h), device=h.device), last]
        return self.head(pooled)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.from_embeddings(self.embed_tokens(tokens), tokens != self.pad_id)


def transformer(
    input_shape,
    num_outputs,
    batchnorm=False,
    vocab_size=8,
    d_model=32,
    heads=2,
    layers=2,
    d_ff=128,
    causal=False,
    norm="pre",
    bias=True,
    positions="learned",
    output="sequence",
    pool="mean",
):
    """A small transformer encoder (causal=False) or decoder (causal=True) over (max_len,) token ids
    (registered as the architecture "transformer" in core/bases/networks.py)."""
    if batchnorm:
        raise ValueError("base.batchnorm: the transformer normalises with LayerNorm; set batchnorm to false")
    if len(tuple(input_shape)) != 1:
        raise ValueError(f"transformer needs input_shape (max_len,) of token ids, got {tuple(input_shape)}")
    return Transformer(
        int(input_shape[0]),
        int(num_outputs),
        vocab_size=int(vocab_size),
        d_model=int(d_model),
        heads=int(heads),
        layers=int(layers),
        d_ff=int(d_ff),
        causal=bool(causal),
        norm=norm,
        bias=bool(bias),
        positions=positions,
        output=output,
        pool=pool,
    )


def trainable_copy(net: nn.Module) -> nn.Module:
    """A copy of a (base's) network with every parameter trainable: the start of a trained-weight run."""
    return copy.deepcopy(net).requires_grad_(True)


def transformer_of(net: nn.Module) -> Transformer:
    """The Transformer inside `net` (a BaseNetwork, its `.net`, or the Transformer itself)."""
    inner = getattr(net, "net", net)
    if not isinstance(inner, Transformer):
        raise ValueError(f"expected a transformer base, got {type(inner).__name__}")
    return inner


@contextmanager
def recording_attention(net: Transformer) -> Iterator[list[Attention]]:
    """Within the block, every attention layer of `net` keeps its last weights in `.weights`."""
    layers = [b.attn for b in net.blocks]
    for a in layers:
        a.record, a.weights = True, None
    try:
        yield layers
    finally:
        for a in layers:
            a.record = False


@dataclass
class AttentionCensus:
    """Per layer and head, over real query positions: how many keys get weight above `threshold`.

    An argmax (hard) head has `mean_count` 1 and `share_one` 1; a mean head spreads over many keys,
    up to `mean_allowed`, the keys a query may see (the real ones, and only past ones when causal).
    """

    scale: float
    threshold: float
    mean_count: list[list[float]]  # [layer][head]
    share_one: list[list[float]]  # [layer][head]: share of queries with exactly one key above threshold
    mean_allowed: float

    def to_dict(self) -> dict:
        return {
            "scale": self.scale,
            "threshold": self.threshold,
            "mean_count": self.mean_count,
            "share_one": self.share_one,
            "mean_allowed": self.mean_allowed,
        }


@torch.no_grad()
def attention_census(
    net: nn.Module,
    tokens: torch.Tensor,
    params: Mapping[str, torch.Tensor] | None = None,
    *,
    scale: float = 1000.0,
    threshold: float = 1e-5,
) -> AttentionCensus:
    """Count, per head, the positions each real query attends to with weight > `threshold` when the
    tensors `params` (names in `net`; default every parameter) are multiplied by `scale`.

    For a masked base pass `net=base.net` and `params` = its masked layers' effective weights W * M.
    """
    model = transformer_of(net)
    if params is None:
        params = dict(model.named_parameters())
    scaled = {k: v.detach() * scale for k, v in params.items()}
    real = tokens != model.pad_id
    was_training = model.training
    model.eval()
    try:
        with recording_attention(model) as layers:
            functional_call(model, scaled, (tokens,))
            maps = [a.weights for a in layers]
    finally:
        model.train(was_training)
    allowed = model.allowed(real)[:, 0]  # (batch, T, T)
    rows = real  # real queries only
    counts, ones = [], []
    for w in maps:  # (batch, heads, T, T)
        above = (w > threshold).sum(-1).double()  # (batch, heads, T)
        per_head = above.permute(1, 0, 2)[:, rows]  # (heads, real queries)
        counts.append([float(c) for c in per_head.mean(1)])
        ones.append([float(c) for c in (per_head == 1).double().mean(1)])
    mean_allowed = float(allowed.sum(-1).double()[rows].mean())
    return AttentionCensus(scale, threshold, counts, ones, mean_allowed)
