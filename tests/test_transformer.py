"""The transformer base: a frozen masked base over token ids, causal and padding masks, trained copies, census."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from supermask.core.bases.networks import ARCHITECTURES, BaseSpec, build_base
from supermask.core.bases.transformer import Transformer, attention_census, trainable_copy, transformer_of
from supermask.core.probes.runner import stacked_runner

VOCAB = 6
MAX_LEN = 12


def spec(**options) -> BaseSpec:
    opts = {"vocab_size": VOCAB, "d_model": 16, "heads": 2, "layers": 2, "d_ff": 32, **options}
    return BaseSpec(
        arch="transformer",
        seed=5,
        init="kaiming_normal",
        num_outputs=VOCAB,
        input_shape=(MAX_LEN,),
        options=opts,
    )


def tokens(lengths, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, VOCAB, (len(lengths), MAX_LEN), generator=g)
    for i, n in enumerate(lengths):
        x[i, n:] = VOCAB  # the padding id
    return x


def test_registered_and_built_by_base_network_from_int64_tokens():
    assert "transformer" in ARCHITECTURES.names()
    base = build_base(spec(causal=True, output="tokens"))
    assert base.masked_names[:2] == ["embed.weight", "pos.weight"] and base.masked_names[-1] == "head.weight"
    assert base.layer_shapes[0] == (16, VOCAB + 1)  # one embedding column per token, padding included
    x = tokens([12, 7, 3])
    out = base(x)
    assert out.shape == (3, MAX_LEN, VOCAB) and torch.isfinite(out).all()
    ones = [torch.ones(s) for s in base.layer_shapes]
    assert torch.equal(base(x, masks=ones), out)
    masks = [m.clone() for m in ones]
    masks[2].zero_()  # no attention in the first block
    assert not torch.allclose(base(x, masks=masks), out)
    assert torch.equal(base(x, weights=base.weights()), out)


def test_fingerprint_is_deterministic_and_unmasked_parameters_are_constants():
    a, b = build_base(spec()), build_base(spec())
    assert a.fingerprint == b.fingerprint
    assert (
        build_base(BaseSpec(**{**spec().to_dict(), "seed": 6, "input_shape": (MAX_LEN,)})).fingerprint
        != a.fingerprint
    )
    frozen = {n: p for n, p in a.net.named_parameters() if n not in a.masked_names}
    assert frozen and all(not p.requires_grad for p in frozen.values())
    for name, p in frozen.items():
        expected = 1.0 if "norm" in name and name.endswith("weight") else 0.0
        assert torch.equal(p, torch.full_like(p, expected)), name


def test_options_are_checked_with_errors_that_name_them():
    with pytest.raises(ValueError, match="norm: got 'middle'"):
        build_base(spec(norm="middle"))
    with pytest.raises(ValueError, match="batchnorm"):
        build_base(BaseSpec(**{**spec().to_dict(), "batchnorm": True, "input_shape": (MAX_LEN,)}))
    with pytest.raises(ValueError, match="multiple of heads"):
        build_base(spec(d_model=10, heads=3))
    with pytest.raises(ValueError, match="max_len"):
        build_base(spec())(torch.zeros(1, MAX_LEN + 1, dtype=torch.int64))


VARIANTS = list(itertools.product(["pre", "post"], [True, False], ["learned", "sinusoidal"]))


@pytest.mark.parametrize("norm,bias,positions", VARIANTS)
def test_causal_mask_lets_no_position_see_the_future(norm, bias, positions):
    net = build_base(spec(causal=True, output="tokens", norm=norm, bias=bias, positions=positions)).net
    x = tokens([12, 9])
    h = net.embed_tokens(x).detach().requires_grad_(True)
    out = net.from_embeddings(h, x != net.pad_id)
    for t in range(8):
        (grad,) = torch.autograd.grad(out[:, t].sum(), h, retain_graph=True)
        assert torch.count_nonzero(grad[:, t + 1 :]) == 0  # exactly zero, not just small
        assert grad[0, : t + 1].abs().sum() > 0  # the past is seen (so the check above can fail)


def test_without_the_causal_mask_the_future_is_seen():
    net = build_base(spec(causal=False, output="tokens")).net
    x = tokens([12])
    h = net.embed_tokens(x).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(net.from_embeddings(h, x != net.pad_id)[:, 0].sum(), h)
    assert grad[:, 1:].abs().sum() > 0


@pytest.mark.parametrize(
    "causal,output,pool",
    [
        (True, "tokens", "mean"),
        (False, "tokens", "mean"),
        (False, "sequence", "mean"),
        (True, "sequence", "last"),
    ],
)
def test_padding_positions_do_not_affect_real_ones(causal, output, pool):
    net = build_base(spec(causal=causal, output=output, pool=pool)).net
    x = tokens([7, 4, 12])
    real = x != net.pad_id
    h = net.embed_tokens(x)
    noisy = torch.where(
        real[..., None], h, torch.randn(h.shape, generator=torch.Generator().manual_seed(9)) * 100
    )
    clean, other = net.from_embeddings(h, real), net.from_embeddings(noisy, real)
    if output == "tokens":
        assert torch.equal(clean[real], other[real])
        assert not torch.allclose(clean[~real], other[~real])  # padding rows did change
    else:
        assert torch.equal(clean, other)
    assert torch.isfinite(clean).all()


def test_sequence_output_ignores_trailing_padding_length():
    net = build_base(spec(output="sequence", pool="mean")).net
    x = tokens([5, 3])
    short = x[:, :6]
    assert torch.allclose(net(short), net(x), atol=1e-6)


def test_trainable_copy_trains_every_parameter_and_leaves_the_base_alone():
    base = build_base(spec(output="sequence"))
    net = trainable_copy(base.net)
    loss = nn.functional.cross_entropy(net(tokens([12, 5, 8])), torch.tensor([0, 1, 2]))
    loss.backward()
    names = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert names == []  # LayerNorm gains, biases and every masked weight get gradients
    assert all(not p.requires_grad for p in base.net.parameters())
    assert transformer_of(base) is base.net and isinstance(transformer_of(net), Transformer)


def test_attention_census_counts_uniform_heads_and_saturation_narrows_attention():
    base = build_base(spec(causal=False))
    x = tokens([12, 12, 8])
    zero_qk = {
        n: (torch.zeros_like(w) if "qkv" in n else w) for n, w in zip(base.masked_names, base.weights())
    }
    uniform = attention_census(base.net, x, zero_qk, scale=1.0)
    assert uniform.mean_allowed == pytest.approx((12 * 12 + 12 * 12 + 8 * 8) / 32)
    assert all(c == pytest.approx(uniform.mean_allowed) for layer in uniform.mean_count for c in layer)
    assert all(s == 0.0 for layer in uniform.share_one for s in layer)
    params = dict(zip(base.masked_names, base.weights()))
    plain = attention_census(base.net, x, params, scale=1.0)
    hard = attention_census(base.net, x, params, scale=1000.0)
    assert sum(map(sum, hard.mean_count)) < sum(map(sum, plain.mean_count))
    assert all(1.0 <= c <= hard.mean_allowed for layer in hard.mean_count for c in layer)
    causal = attention_census(build_base(spec(causal=True)).net, x, scale=1.0)
    assert causal.mean_allowed == pytest.approx((78 + 78 + 36) / 32)  # query i sees i + 1 keys


def test_the_probe_runner_runs_the_transformer_in_float64_too():
    base = build_base(spec(causal=True))
    x = torch.stack([tokens([12, 7, 3]), tokens([5, 12, 9], seed=1)])
    run = stacked_runner(base.net, x, base.masked_names, hidden=base.net.hidden_names())
    weights = [w.unsqueeze(0).expand(2, *w.shape) for w in base.weights()]
    hidden, out = run(weights)
    hidden64, out64 = run([w.double() for w in weights], dtype=torch.float64)
    assert out64.dtype == torch.float64 and all(h.dtype == torch.float64 for h in hidden64)
    assert torch.allclose(out64.float(), out, rtol=1e-4, atol=1e-5)
    assert len(hidden64) == len(hidden) == 2
