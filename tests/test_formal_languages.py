"""Formal-language and pydoc character streams: determinism, labels checked independently, length splits."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from supermask.data.formal_languages import BOS, END, IGNORE, LANGUAGES
from supermask.data.streams import STREAMS, build_stream
from supermask.data.token_streams import TokenStream

SMALL = {"train_size": 200, "test_size": 100}


def reduce_dyck(s: str) -> bool:
    """Dyck membership by deleting matched adjacent pairs until none is left (no stack)."""
    previous = None
    while s != previous:
        previous, s = s, s.replace("()", "").replace("[]", "")
    return s == ""


def text(lang: str, symbols) -> str:
    return "".join(LANGUAGES[lang].symbols[i] for i in symbols)


def strings_of(x: torch.Tensor, pad: int) -> list[list[int]]:
    out = []
    for row in x.tolist():
        assert row[0] == BOS
        body = [v for v in row[1:] if v != pad]
        assert row[1 : 1 + len(body)] == body  # padding only after the string
        out.append(body)
    return out


def check_membership(lang: str, s: str) -> bool:
    if lang in ("dyck1", "dyck2"):
        return reduce_dyck(s)
    if lang == "anbn":
        m = re.fullmatch(r"(a+)(b+)", s)
        return bool(m) and len(m.group(1)) == len(m.group(2))
    if lang == "anbncn":
        m = re.fullmatch(r"(a+)(b+)(c+)", s)
        return bool(m) and len(m.group(1)) == len(m.group(2)) == len(m.group(3))
    if lang == "counting":
        return s.count("a") > s.count("b")
    return s.count("1") % 2 == 0


def test_streams_are_registered_and_say_what_their_labels_mean():
    assert {"formal_languages", "pydoc_chars"} <= set(STREAMS.names())
    stream = build_stream("formal_languages", num_tasks=2, **SMALL)
    assert isinstance(stream, TokenStream) and stream.label_names == (
        "not in the language",
        "in the language",
    )
    assert stream.describe(1)["language"] == "dyck2" and stream.base_options() == {
        "vocab_size": 6,
        "output": "sequence",
    }


def test_streams_are_deterministic_from_the_seed():
    a = build_stream("formal_languages", num_tasks=6, seed=3, **SMALL)
    b = build_stream("formal_languages", num_tasks=6, seed=3, **SMALL)
    c = build_stream("formal_languages", num_tasks=6, seed=4, **SMALL)
    for t in range(6):
        ta, tb = a.task(t), b.task(t)
        for field in ("train_x", "train_y", "test_x", "test_y"):
            assert torch.equal(getattr(ta, field), getattr(tb, field))
        assert ta.train_x.dtype == torch.int64 and ta.train_x.shape == (200, a.input_shape[0])
    assert not torch.equal(a.task(0).train_x, c.task(0).train_x)


@pytest.mark.parametrize("lang", list(LANGUAGES))
def test_membership_labels_agree_with_an_independent_checker(lang):
    stream = build_stream("formal_languages", num_tasks=1, languages=[lang], train_size=400, test_size=400)
    task = stream.task(0)
    for x, y in ((task.train_x, task.train_y), (task.test_x, task.test_y)):
        labels = [check_membership(lang, text(lang, s)) for s in strings_of(x, stream.pad_id)]
        assert labels == [bool(v) for v in y.tolist()]
        assert y.float().mean() == 0.5  # balanced classes


def test_dyck2_negatives_include_near_misses_with_balanced_depth():
    stream = build_stream("formal_languages", num_tasks=1, languages=["dyck2"], train_size=400, test_size=10)
    task = stream.task(0)
    near = 0
    for s, y in zip(strings_of(task.train_x, stream.pad_id), task.train_y.tolist()):
        depth = np.cumsum([1 if v % 2 == 0 else -1 for v in s])
        if y == 0 and depth.min() >= 0 and depth[-1] == 0:
            near += 1  # bracket shape fine, only the types mismatch
    assert near > 50


def test_lengths_split_and_shift_as_specified():
    stream = build_stream(
        "formal_languages",
        num_tasks=4,
        languages=["dyck1", "anbncn"],
        train_lengths=[2, 8],
        test_lengths=[10, 20],
        length_step=6,
        **SMALL,
    )
    assert stream.input_shape == (1 + 20 + 6,)
    for t in range(4):
        lang = stream.language(t).name
        shift = 6 * (t // 2)
        assert stream.lengths(t) == {"train": (2 + shift, 8 + shift), "test": (10 + shift, 20 + shift)}
        task = stream.task(t)
        for part, x, (lo, hi) in (("train", task.train_x, (2, 8)), ("test", task.test_x, (10, 20))):
            lengths = {len(s) for s in strings_of(x, stream.pad_id)}
            assert min(lengths) >= lo + shift and max(lengths) <= hi + shift, (t, part)
            assert all(LANGUAGES[lang].length_ok(n) for n in lengths)
            assert len(lengths) > 1
    with pytest.raises(ValueError, match="no string of anbncn"):
        build_stream("formal_languages", num_tasks=1, languages=["anbncn"], train_lengths=[4, 5])


def test_next_token_labels_are_the_shifted_string_then_end():
    stream = build_stream(
        "formal_languages", num_tasks=2, languages=["dyck2", "anbn"], target="next", **SMALL
    )
    assert stream.num_classes == 6 and stream.base_options()["output"] == "tokens"
    for t in range(2):
        task = stream.task(t)
        assert task.train_y.shape == task.train_x.shape
        for x, y in zip(task.train_x.tolist(), task.train_y.tolist()):
            n = sum(v != stream.pad_id for v in x)
            assert y[: n - 1] == x[1:n] and y[n - 1] == END and set(y[n:]) <= {IGNORE}
            assert check_membership(stream.language(t).name, text(stream.language(t).name, x[1:n]))
    with pytest.raises(ValueError, match="generative"):
        build_stream("formal_languages", num_tasks=1, languages=["parity"], target="next")


def test_label_noise_flips_exactly_that_share_of_training_labels_only():
    clean = build_stream("formal_languages", num_tasks=1, languages=["anbn"], **SMALL).task(0)
    noisy_stream = build_stream("formal_languages", num_tasks=1, languages=["anbn"], label_noise=0.2, **SMALL)
    noisy = noisy_stream.task(0)
    assert torch.equal(clean.train_x, noisy.train_x) and torch.equal(clean.test_y, noisy.test_y)
    assert int((clean.train_y != noisy.train_y).sum()) == 40


def test_validation_split_holds_out_sequences():
    stream = build_stream("formal_languages", num_tasks=1, data={"validation_fraction": 0.25}, **SMALL)
    task = stream.task(0)
    assert len(task.val_x) == 50 and len(task.train_x) == 150 and task.val_y.float().mean() == 0.5


def test_pydoc_chars_is_next_character_prediction_on_disjoint_regions():
    stream = build_stream("pydoc_chars", num_tasks=3, seq_len=32, train_size=100, test_size=50)
    task = stream.task(2)
    assert torch.equal(
        task.train_x,
        build_stream("pydoc_chars", num_tasks=3, seq_len=32, train_size=100, test_size=50).task(2).train_x,
    )
    assert task.train_x.shape == (100, 32) and task.train_x.dtype == torch.int64
    assert torch.equal(task.train_x[:, 1:], task.train_y[:, :-1])
    assert int(task.train_x.max()) < stream.vocab_size == stream.num_classes == 97
    ids = stream.ids()
    part = len(ids) // 3
    chunk = ids[2 * part : 3 * part]
    split = part - part // 10
    train_text, test_text = stream.decode(chunk[:split].tolist()), stream.decode(chunk[split:].tolist())
    assert all(stream.decode(row) in train_text for row in task.train_x.tolist())
    assert all(stream.decode(row) in test_text for row in task.test_x.tolist())
    assert "Python" in stream.data_source
