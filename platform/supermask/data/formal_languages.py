"""Formal-language token streams: Dyck-1, Dyck-2, a^n b^n, a^n b^n c^n, counting and parity.

Inputs are int64 token ids (see data/token_streams.py: the padding id is one no real token uses). A
sequence is BOS followed by the string's symbols; the first token is never padding.

`formal_languages`: task t learns language `languages[t % k]` (k languages) on string lengths
`train_lengths` and is tested on `test_lengths` (inclusive ranges, so test strings can be longer than
any training string), both shifted by `length_step * (t // k)`: a stream of languages, a stream of
ever longer strings of one language, or both. Every task shares one vocabulary (4 symbol ids, BOS and
END), so one base serves them all. Two targets:

- `membership`: one label per sequence, 1 = the string is in the language, 0 = it is not. Classes
  are balanced; negatives are near misses of the same length (a positive with its tokens shuffled,
  one token changed, or the counts off), never random noise. `label_noise` flips that fraction of
  the training labels (test labels stay clean), to cap the training accuracy a model can reach.
- `next`: next-token prediction over strings of the language (Dyck, a^n b^n, a^n b^n c^n only): the
  label at position i is the token at i+1 (END after the last symbol), -100 (ignored by
  cross_entropy) at padding.

Examples are a pure function of (seed, t): the training set is drawn from rng([seed, t, 0]), the
test set from rng([seed, t, 1]), the label noise from rng([seed, t, 2]).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from supermask.data.streams import register_stream
from supermask.data.token_streams import IGNORE, TokenStream, positive_int

SYMBOLS = 4  # symbol ids 0..3, shared by every language
BOS, END = SYMBOLS, SYMBOLS + 1
FORMAL_VOCAB = SYMBOLS + 2
TARGETS = ("membership", "next")


def _dyck_member(s: Sequence[int], types: int) -> bool:
    stack: list[int] = []
    for x in s:
        if not 0 <= x < 2 * types:
            return False
        if x % 2 == 0:
            stack.append(x)
        elif not stack or stack.pop() != x - 1:
            return False
    return not stack


def _dyck_positive(rng: np.random.Generator, length: int, types: int) -> list[int]:
    """A random walk over depth: open when empty, close when the rest must all close, else a coin flip."""
    stack: list[int] = []
    out = []
    for i in range(length):
        if stack and (len(stack) == length - i or rng.random() < 0.5):
            out.append(stack.pop() + 1)
        else:
            kind = 2 * int(rng.integers(types))
            stack.append(kind)
            out.append(kind)
    return out


def _shuffled_negative(rng, positive: list[int], member: Callable[[Sequence[int]], bool]) -> list[int] | None:
    """The positive's tokens in an order outside the language (None if 100 shuffles found none)."""
    for _ in range(100):
        s = [int(x) for x in rng.permutation(positive)]
        if not member(s):
            return s
    return None


def _dyck_negative(rng: np.random.Generator, length: int, types: int) -> list[int]:
    s = _dyck_positive(rng, length, types)
    if rng.random() < 0.5:
        shuffled = _shuffled_negative(rng, s, lambda x: _dyck_member(x, types))
        if shuffled is not None:
            return shuffled
    i = int(rng.integers(length))
    if types == 1:
        s[i] ^= 1  # an opening bracket becomes a closing one or back: the counts no longer match
    else:  # the same shape with one bracket of another type: only matching the types tells
        s[i] = 2 * ((s[i] // 2 + int(rng.integers(1, types))) % types) + s[i] % 2
    return s


def _blocks(counts: Sequence[int]) -> list[int]:
    return [sym for sym, n in enumerate(counts) for _ in range(n)]


def _anbn_member(s: Sequence[int], k: int) -> bool:
    n, rest = divmod(len(s), k)
    return rest == 0 and n > 0 and list(s) == _blocks([n] * k)


def _anbn_negative(rng: np.random.Generator, length: int, k: int) -> list[int]:
    n = length // k
    if rng.random() < 0.5:  # the right counts in the wrong order
        shuffled = _shuffled_negative(rng, _blocks([n] * k), lambda x: _anbn_member(x, k))
        if shuffled is not None:
            return shuffled
    while True:  # in order, with counts that are not all equal
        cuts = np.sort(rng.integers(0, length + 1, size=k - 1))
        counts = np.diff(np.concatenate([[0], cuts, [length]]))
        if len(set(counts.tolist())) > 1:
            return _blocks(counts.tolist())


def _counting_member(s: Sequence[int]) -> bool:
    return len(s) % 2 == 1 and all(x in (0, 1) for x in s) and s.count(0) > s.count(1)


def _counting_draw(rng: np.random.Generator, length: int, inside: bool) -> list[int]:
    s = [int(x) for x in rng.integers(0, 2, size=length)]
    # odd length: swapping a and b flips the majority
    return s if _counting_member(s) == inside else [1 - x for x in s]


def _parity_member(s: Sequence[int]) -> bool:
    return all(x in (0, 1) for x in s) and sum(s) % 2 == 0


def _parity_draw(rng: np.random.Generator, length: int, inside: bool) -> list[int]:
    s = [int(x) for x in rng.integers(0, 2, size=length)]
    if _parity_member(s) != inside:
        s[-1] ^= 1
    return s


@dataclass(frozen=True)
class Language:
    """A formal language over symbol ids 0..len(symbols)-1, with a sampler of members and near misses."""

    name: str
    symbols: tuple[str, ...]
    description: str
    length_ok: Callable[[int], bool]
    member: Callable[[Sequence[int]], bool]
    draw: Callable[[np.random.Generator, int, bool], list[int]]  # (rng, length, inside) -> string
    generative: bool  # whether next-token prediction over its members is a task


LANGUAGES: dict[str, Language] = {
    lang.name: lang
    for lang in (
        Language(
            "dyck1", ("(", ")"), "balanced brackets of one type (even lengths)",
            lambda n: n >= 2 and n % 2 == 0, lambda s: _dyck_member(s, 1),
            lambda rng, n, inside: _dyck_positive(rng, n, 1) if inside else _dyck_negative(rng, n, 1), True,
        ),
        Language(
            "dyck2", ("(", ")", "[", "]"), "balanced, properly nested brackets of two types (even lengths)",
            lambda n: n >= 2 and n % 2 == 0, lambda s: _dyck_member(s, 2),
            lambda rng, n, inside: _dyck_positive(rng, n, 2) if inside else _dyck_negative(rng, n, 2), True,
        ),
        Language(
            "anbn", ("a", "b"), "a^n b^n, n >= 1 (even lengths)",
            lambda n: n >= 2 and n % 2 == 0, lambda s: _anbn_member(s, 2),
            lambda rng, n, inside: _blocks([n // 2] * 2) if inside else _anbn_negative(rng, n, 2), True,
        ),
        Language(
            "anbncn", ("a", "b", "c"), "a^n b^n c^n, n >= 1 (lengths that are multiples of 3)",
            lambda n: n >= 3 and n % 3 == 0, lambda s: _anbn_member(s, 3),
            lambda rng, n, inside: _blocks([n // 3] * 3) if inside else _anbn_negative(rng, n, 3), True,
        ),
        Language(
            "counting", ("a", "b"), "strings over {a, b} with more a's than b's (majority; odd lengths)",
            lambda n: n >= 1 and n % 2 == 1, _counting_member, _counting_draw, False,
        ),
        Language(
            "parity", ("0", "1"), "bit strings with an even number of 1s",
            lambda n: n >= 1, _parity_member, _parity_draw, False,
        ),
    )
}  # fmt: skip


def _length_range(option: str, value: Any) -> tuple[int, int]:
    ok = (
        isinstance(value, Sequence)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and 1 <= value[0] <= value[1]
    )
    if not ok:
        raise ValueError(f"option {option}={value!r} must be [lo, hi], whole numbers with 1 <= lo <= hi")
    return int(value[0]), int(value[1])


@register_stream("formal_languages")
class FormalLanguageStream(TokenStream):
    """Task t: language languages[t % k] on lengths shifted by length_step * (t // k); see the module doc."""

    def __init__(
        self,
        *,
        languages: Sequence[str] = ("dyck1", "dyck2", "anbn", "anbncn", "counting", "parity"),
        target: str = "membership",
        train_lengths: Sequence[int] = (2, 16),
        test_lengths: Sequence[int] = (2, 32),
        length_step: int = 0,
        train_size: int = 1000,
        test_size: int = 500,
        label_noise: float = 0.0,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        if isinstance(languages, str) or not languages:
            raise ValueError(
                f"option languages={languages!r} must be a non-empty list of: {', '.join(LANGUAGES)}"
            )
        unknown = [name for name in languages if name not in LANGUAGES]
        if unknown:
            raise ValueError(f"option languages: unknown {unknown}; known: {', '.join(LANGUAGES)}")
        if target not in TARGETS:
            raise ValueError(f"option target={target!r}; allowed: {', '.join(TARGETS)}")
        if target == "next":
            flat = [name for name in languages if not LANGUAGES[name].generative]
            if flat:
                allowed = ", ".join(n for n, lang in LANGUAGES.items() if lang.generative)
                raise ValueError(f"option target='next' needs generative languages ({allowed}), not {flat}")
        if isinstance(length_step, bool) or not isinstance(length_step, int) or length_step < 0:
            raise ValueError(f"option length_step={length_step!r} must be a whole number >= 0")
        if (
            isinstance(label_noise, bool)
            or not isinstance(label_noise, int | float)
            or not 0 <= label_noise < 0.5
        ):
            raise ValueError(f"option label_noise={label_noise!r} must be in [0, 0.5)")
        if label_noise and target != "membership":
            raise ValueError("option label_noise applies to target 'membership' only")
        self.languages = tuple(languages)
        self.target = target
        self.train_lengths = _length_range("train_lengths", train_lengths)
        self.test_lengths = _length_range("test_lengths", test_lengths)
        self.length_step = length_step
        self.train_size = positive_int("train_size", train_size)
        self.test_size = positive_int("test_size", test_size)
        self.label_noise = float(label_noise)
        for t in range(min(self.num_tasks, len(self.languages))):
            for lengths in (self.train_lengths, self.test_lengths):
                self._valid_lengths(LANGUAGES[self.languages[t]], lengths)  # fail now, not at task t
        longest = max(self.train_lengths[1], self.test_lengths[1])
        longest += length_step * ((self.num_tasks - 1) // len(self.languages))
        self.vocab_size = FORMAL_VOCAB
        self.per_position = target == "next"
        self.input_shape = (longest + 1,)  # BOS + the longest string
        self.num_classes = FORMAL_VOCAB if self.per_position else 2
        self.token_names = ("s0", "s1", "s2", "s3", "<bos>", "<end>")
        if self.per_position:
            self.label_names = self.token_names
        else:
            self.label_names = ("not in the language", "in the language")
        self._options = {
            "languages": list(languages),
            "target": target,
            "train_lengths": list(self.train_lengths),
            "test_lengths": list(self.test_lengths),
            "length_step": length_step,
            "train_size": train_size,
            "test_size": test_size,
            "label_noise": label_noise,
        }

    @property
    def data_source(self) -> str:
        return "formal languages (generated; no files)"

    def language(self, t: int) -> Language:
        """The language of task t."""
        self._check_index(t)
        return LANGUAGES[self.languages[int(t) % len(self.languages)]]

    def lengths(self, t: int) -> dict[str, tuple[int, int]]:
        """Task t's string length ranges (inclusive), for training and for testing."""
        self._check_index(t)
        shift = self.length_step * (int(t) // len(self.languages))
        return {
            "train": (self.train_lengths[0] + shift, self.train_lengths[1] + shift),
            "test": (self.test_lengths[0] + shift, self.test_lengths[1] + shift),
        }

    def describe(self, t: int) -> dict[str, Any]:
        """What task t is, in words: language, lengths, target and what its labels mean."""
        lang = self.language(t)
        return {
            "task_id": self.task_id(t),
            "language": lang.name,
            "description": lang.description,
            "symbols": {i: s for i, s in enumerate(lang.symbols)},
            "lengths": self.lengths(t),
            "target": self.target,
            "labels": dict(enumerate(self.label_names)),
            "label_noise": self.label_noise,
        }

    @staticmethod
    def _valid_lengths(lang: Language, lengths: tuple[int, int]) -> list[int]:
        valid = [n for n in range(lengths[0], lengths[1] + 1) if lang.length_ok(n)]
        if not valid:
            raise ValueError(f"no string of {lang.name} ({lang.description}) has a length in {list(lengths)}")
        return valid

    def strings(self, t: int, part: str) -> tuple[list[list[int]], np.ndarray]:
        """Task t's raw strings (symbol ids, no BOS) and their true membership, for 'train' or 'test'."""
        lang = self.language(t)
        lengths = self._valid_lengths(lang, self.lengths(t)[part])
        size = self.train_size if part == "train" else self.test_size
        rng = np.random.default_rng([self.seed, int(t), 0 if part == "train" else 1])
        if self.per_position:
            inside = np.ones(size, dtype=bool)
        else:
            inside = rng.permutation(np.arange(size) % 2 == 0)  # balanced classes
        strings = [lang.draw(rng, int(rng.choice(lengths)), bool(y)) for y in inside]
        return strings, inside

    def _encode(self, strings: list[list[int]], inside: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        width = self.input_shape[0]
        x = np.full((len(strings), width), self.pad_id, dtype=np.int64)
        y = (
            np.full((len(strings), width), IGNORE, dtype=np.int64)
            if self.per_position
            else inside.astype(np.int64)
        )
        for i, s in enumerate(strings):
            x[i, : len(s) + 1] = [BOS, *s]
            if self.per_position:
                y[i, : len(s) + 1] = [*s, END]
        return torch.from_numpy(x), torch.from_numpy(y)

    def _arrays(self, t: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        train_x, train_y = self._encode(*self.strings(t, "train"))
        test_x, test_y = self._encode(*self.strings(t, "test"))
        if self.label_noise:
            rng = np.random.default_rng([self.seed, t, 2])
            flip = rng.choice(len(train_y), size=int(round(self.label_noise * len(train_y))), replace=False)
            train_y[torch.from_numpy(flip)] = 1 - train_y[torch.from_numpy(flip)]
        return train_x, train_y, test_x, test_y
