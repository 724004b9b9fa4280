"""The norm and saturation probes (core/probes/probe.py) of a translation trainer, as one of its step hooks.

`TranslationProbe(trainer, config, images, task_id, sink)` probes each of the four networks (g_xy,
g_yx, d_x, d_y) on `config.every`'s cadence, before the first step (`start()`) and after the last.
Each network is one probed "task" with id `<task_id>/<network>`, so a run's metrics.jsonl, its
results.json summary and its norm/saturation plots read exactly as those of a mask search.

What is probed is what trains: every trainable tensor of a trained network (conv weights, the
biases of the unnormalised convs, instance-norm scales and shifts), or the scores and masks of a
supermask network (norm, direction, alignment, step size; churn and density of its masks). The
saturation probe scales a network's conv weights (the effective W * M of a supermask) by c and
compares hidden states (the output of every conv -> norm -> activation unit, one row per image) and
outputs with the unscaled network on a fixed batch of training images of the network's input domain.
The outputs are compared where they decide something: a generator's per pixel (rows: pixels, columns:
colour channels, so `saturation_agreement` is the share of pixels whose dominant channel is kept), a
discriminator's per logit location (columns: 0 and the logit, so agreement is the share of real/fake
decisions kept).

With instance norm on, a conv followed by a norm has no bias and the norm divides the scale out, so
those hidden states are unchanged by c (up to the norm's eps); only the unnormalised layers can
saturate: the generator's last transposed conv feeds a sigmoid, the first conv has a bias. The probe
measures this rather than assuming it (`translation.norm: none` makes every layer scale-sensitive).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from supermask.core.probes.probe import Probe, ProbeConfig, RunFn
from supermask.core.probes.runner import stacked_runner
from supermask.core.translation.generator import maskable_weights
from supermask.core.translation.masked import MaskedNetwork

Sink = Callable[[list[dict]], None]
INPUT_DOMAIN = {"g_xy": "x", "g_yx": "y", "d_x": "x", "d_y": "y"}


class _Logits(nn.Module):
    """A discriminator's logit map alone (its taps dropped), so the runner sees one output tensor."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]


def unit_outputs(net: nn.Module) -> list[str]:
    """Modules whose outputs are the hidden states: each conv -> norm -> activation unit (a Sequential
    that starts with a conv)."""
    return [
        name
        for name, m in net.named_modules()
        if isinstance(m, nn.Sequential) and len(m) > 1 and isinstance(m[0], (nn.Conv2d, nn.ConvTranspose2d))
    ]


def _image_run(net: nn.Module, images: torch.Tensor, names: list[str], discriminator: bool) -> RunFn:
    """A probe RunFn over one network (K = 1): hidden states one row per image, outputs as described above."""
    hidden, module = unit_outputs(net), net
    if discriminator:
        module, names, hidden = _Logits(net), [f"net.{n}" for n in names], [f"net.{h}" for h in hidden]
    run = stacked_runner(module, images.unsqueeze(0), names, hidden=hidden)

    def shaped(effective: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        states, out = run(effective)  # (1, B, C, H, W) each
        states = [h.flatten(2) for h in states]
        if discriminator:
            logits = out.flatten(2)
            return states, torch.stack([torch.zeros_like(logits), logits], -1)
        return states, out.flatten(3).transpose(2, 3)  # (1, B, H * W, C)

    return shaped


class _NetworkProbe:
    """One network's Probe and how to read what it trains."""

    def __init__(self, name: str, net: nn.Module, images: torch.Tensor, config: ProbeConfig) -> None:
        self.name, self.net = name, net
        discriminator = name.startswith("d_")
        if isinstance(net, MaskedNetwork):
            self.masked = True
            params = dict(net.net.named_parameters())
            self.names = list(net.masked_names)
            frozen = [params[n].detach().unsqueeze(0) for n in self.names]
            run = _image_run(net.net, images, self.names, discriminator)
            self.probe = Probe(
                run, names=self.names, frozen=frozen, hidden=unit_outputs(net.net), config=config
            )
        else:
            self.masked = False
            self.trained = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
            self.conv_names = list(maskable_weights(net))
            run = _image_run(net, images, self.conv_names, discriminator)
            names = [n for n, _ in self.trained]
            self.probe = Probe(run, names=names, hidden=unit_outputs(net), config=config)

    def observe(self, step: int, extra: dict[str, torch.Tensor]) -> dict:
        if self.masked:
            method = self.net.method
            masks = [m.detach() for m in method()]
            return self.probe.observe(step, list(method.scores), masks=masks, extra=extra)[0]
        params = dict(self.net.named_parameters())
        effective = [params[n].detach().unsqueeze(0) for n in self.conv_names]
        trained = [p.detach().unsqueeze(0) for _, p in self.trained]
        return self.probe.observe(step, trained, effective=effective, extra=extra)[0]


class TranslationProbe:
    """Probes a TranslationTrainer's four networks on a cadence; a trainer hook (see the module doc)."""

    def __init__(
        self,
        trainer,
        config: ProbeConfig,
        images: dict[str, torch.Tensor],
        task_id: str,
        sink: Sink | None = None,
    ) -> None:
        """`images`: {"x": ..., "y": ...} training images (N, C, H, W) of each domain; the first
        `config.batch` of each are the fixed probe batch."""
        self.trainer, self.config, self.task_id, self.sink = trainer, config, task_id, sink
        batch = {d: imgs[: config.batch].to(trainer.device) for d, imgs in images.items()}
        self.networks = [
            _NetworkProbe(name, net, batch[INPUT_DOMAIN[name]], config)
            for name, net in trainer.networks().items()
        ]
        self.seconds = 0.0
        self.probes = 0
        self.last: list[dict] = []  # the latest record of each network

    def start(self) -> list[dict]:
        """Probe the state before training (only if the trainer has not stepped yet)."""
        if self.trainer.step != 0 or not self.config.enabled:
            return []
        return self._observe(0, {})

    def __call__(self, trainer, metrics: dict) -> None:
        step = trainer.step  # steps done
        if self.config.enabled and (step % self.config.every == 0 or step == trainer.settings.steps):
            self._observe(step, metrics)

    def _observe(self, step: int, metrics: dict) -> list[dict]:
        if self.trainer.device.type == "cuda":
            torch.cuda.synchronize()  # the step's queued work is the step's time, not the probe's
        started = time.perf_counter()
        records = []
        for net in self.networks:
            loss = metrics.get("g_loss" if net.name.startswith("g_") else "d_loss")
            extra = {} if loss is None else {"loss": torch.tensor([float(loss)], dtype=torch.float64)}
            record = net.observe(step, extra)
            record.update(task=f"{self.task_id}/{net.name}", network=net.name, lr=self.trainer.settings.lr)
            records.append(record)
        self.last = records
        self.probes += 1
        if self.sink is not None:
            self.sink(records)
        self.seconds += time.perf_counter() - started
        return records
