"""``hjepa audit``: prove that every model, mask and EMA parameter changes something.

Why: this project exists because of a flag that was accepted and ignored ("LayerScale as a
no-op"). The audit takes the keys from the params *schema* (every leaf under ``model.``,
``mask.``, ``ema.``, plus ``data.image_size`` and ``data.channels``, which the model reads), so a
key added to the schema is audited automatically and fails until something uses it.

For each key it builds a variant of the params through ``hjepa.core.config`` (so the variant is
valid), changing only that key to another valid value, and compares the variant with the base on
evidence that is cheap first and decisive last:

1. architecture: parameter count and shapes of the H-JEPA model;
2. masks: statistics of masks drawn from a fixed seed (``hjepa.train.masks.mask_stats`` plus how
   often the generator had to relax its constraints);
3. training: the loss of one forward pass on a fixed random batch and seed, then the target
   encoder's weights after one AdamW step + ``ema_update`` (momentum from ``ema.*`` at the middle
   of a two-step schedule, so both ends of the schedule matter).

Alternative values are chosen generically from the value and its schema type (bool → flipped,
number → scaled or shifted, literal → another allowed value, list → shortened or perturbed); the
first few that validate are tried, and a key has "no effect" only if none of them changes
anything. A key whose effect needs another key switched on (``init_value`` needs LayerScale) is
audited with that companion applied to both sides (``COMPANIONS``).
"""

from __future__ import annotations

import json
import math
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, ValidationError

from hjepa.core.config import (
    ConfigError,
    Params,
    apply_overrides,
    leaf_keys,
    parse_params,
    to_dict,
)
from hjepa.core.params_errors import format_validation_error
from hjepa.models.hjepa import HJEPA
from hjepa.train.ema import ema_update, momentum_at
from hjepa.train.masks import MaskGenerator, mask_stats

__all__ = ["COMPANIONS", "PREFERRED", "AuditRow", "audit_params", "audited_keys", "format_table"]

AUDITED_PREFIXES = ("model.", "mask.", "ema.")
AUDITED_EXTRA = ("data.image_size", "data.channels")

# Keys that only act once another key enables them: the companion is set on both sides.
COMPANIONS: dict[str, dict[str, Any]] = {
    "model.layerscale.init_value": {"model.layerscale.use_layerscale": True},
}

# Alternatives tried before the generic ones, where a key only acts in a regime the generic
# values do not reach: ``min_keep`` matters only when a context could be smaller than it.
PREFERRED: dict[str, Callable[[Params], list[Any]]] = {
    "mask.min_keep": lambda p: [p.grid_size**2 // 2],
}

MAX_TRIES = 4  # valid alternative values tried per key before declaring "no effect"
BATCH = 4  # images in the forward/step batch: tiny, the audit must take seconds
MASK_BATCHES = 8  # batches of masks whose statistics are compared
MASK_BATCH = 8
SEED = 0


@dataclass(frozen=True)
class AuditRow:
    """One key's verdict: ``effect`` names what changed ("" = nothing), ``evidence`` shows it."""

    key: str
    effect: str
    evidence: str

    @property
    def ok(self) -> bool:
        return bool(self.effect)


# ----------------------------------------------------------------------------------- schema walk
def audited_keys(params: Params) -> list[str]:
    """Every leaf key the audit covers, from the params' own (possibly extended) schema."""
    return [k for k in leaf_keys(params) if k.startswith(AUDITED_PREFIXES) or k in AUDITED_EXTRA]


def _annotation(schema: type[BaseModel], key: str) -> Any:
    cls: Any = schema
    ann: Any = None
    for part in key.split("."):
        ann = cls.model_fields[part].annotation
        cls = ann
    return ann


def _get(raw: Mapping[str, Any], key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        node = node[part]
    return node


def _number_candidates(value: float | int) -> list[Any]:
    if isinstance(value, int):
        return [value * 2, value + 1, value - 1, value // 2, value * 4, value * 8, value * 16]
    out = [value * 2, value / 2, value * 1.1, value * 0.9, value * 0.999, value + 0.1, 0.5]
    if 0 <= value < 1:  # a fraction near 1 (EMA momentum 0.99 ≤ end ≤ 1): halfway to 1
        out.append((value + 1) / 2)
    return out


def candidates(value: Any, annotation: Any) -> list[Any]:
    """Alternative values for a leaf, most telling first (validity is checked by the caller)."""
    out: list[Any] = []
    if typing.get_origin(annotation) is typing.Literal:
        out = [a for a in typing.get_args(annotation) if a != value]
    elif isinstance(value, bool):
        out = [not value]
    elif isinstance(value, int | float):
        out = _number_candidates(value)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        if len(value) > 1:
            out += [value[:-1], value[1:]]
        for i, item in enumerate(value):
            for field, v in item.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    for alt in _number_candidates(v):
                        out.append([*value[:i], {**item, field: alt}, *value[i + 1 :]])
    elif isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
        for factor in (0.9, 1.1, 0.5, 2.0):
            out.append([type(v)(v * factor) for v in value])
        for i in range(len(value)):
            for alt in _number_candidates(value[i]):
                out.append([*value[:i], alt, *value[i + 1 :]])
    elif isinstance(value, str):
        out = [value + "_audit"]
    seen, unique = set(), []
    for c in out:
        tag = json.dumps(c, sort_keys=True)
        if c != value and tag not in seen and not _bad_number(c):
            seen.add(tag)
            unique.append(c)
    return unique


def _bad_number(x: Any) -> bool:
    return isinstance(x, float) and not math.isfinite(x)


def _parse(raw: dict[str, Any], schema: type[Params]) -> Params:
    if schema is Params:
        return parse_params(raw, "audit")
    try:  # an extended schema (tests): validate the same way parse_params does
        params = schema.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "audit", Params)) from None
    params._bind("")
    return params


# ------------------------------------------------------------------------------------- evidence
class Probe:
    """The measurable behaviour of one params set, computed lazily and cached."""

    def __init__(self, params: Params) -> None:
        self.params = params
        self._model: HJEPA | None = None
        self._arch: dict[str, tuple[int, ...]] | None = None
        self._masks: dict[str, float] | None = None
        self._loss: list[float] | None = None
        self._weights: torch.Tensor | None = None

    def architecture(self) -> dict[str, tuple[int, ...]]:
        """Parameter names and shapes, from a model built on the meta device (no memory, no
        initialisation: shapes only)."""
        if self._arch is None:
            with torch.device("meta"):
                model = HJEPA.from_params(self.params.model, self.params.data)
            self._arch = {n: tuple(p.shape) for n, p in model.named_parameters()}
        return self._arch

    def masks(self) -> dict[str, float]:
        if self._masks is None:
            gen = MaskGenerator.from_params(self.params.mask, self.params.grid_size)
            rng = torch.Generator().manual_seed(SEED)
            totals: dict[str, float] = {}
            for _ in range(MASK_BATCHES):
                masks, info = gen.sample_with_info(MASK_BATCH, rng)
                stats = mask_stats(masks, self.params.grid_size**2)
                stats["relaxation_level"] = float(info.level.double().mean())
                stats["context_length"] = float(masks.context_idx.shape[1])
                for k, v in stats.items():
                    totals[k] = totals.get(k, 0.0) + v / MASK_BATCHES
            self._masks = totals
        return self._masks

    def _batch(self) -> tuple[HJEPA, torch.Tensor, Any, torch.Tensor]:
        p = self.params
        if self._model is None:
            torch.manual_seed(SEED)
            self._model = HJEPA.from_params(p.model, p.data)
        g = torch.Generator().manual_seed(SEED)
        size = p.data.image_size
        images = torch.randn(BATCH, p.data.channels, size, size, generator=g)
        masks = MaskGenerator.from_params(p.mask, p.grid_size).sample(BATCH, g)
        # The second view (model.invariance_weight): always made, so both sides draw alike.
        view = images.flip(-1) + 0.1 * torch.randn(images.shape, generator=g)
        torch.manual_seed(SEED + 1)  # the same stochastic-depth draws on both sides
        return self._model.train(), images, masks, view

    def loss(self) -> list[float]:
        """Total and per-level loss of one forward pass (train mode) on a fixed batch and seed."""
        if self._loss is None:
            model, images, masks, view = self._batch()
            with torch.no_grad():
                out = model(images, masks, view)
            self._loss = [float(out.loss)] + [float(v) for v in out.level_losses]
        return self._loss

    def weights(self) -> torch.Tensor:
        """Flat target-encoder weights after one AdamW step and one ``ema_update`` (momentum at
        step 1 of a 2-step schedule: the middle of ``ema.momentum_start`` → ``momentum_end``)."""
        if self._weights is None:
            p = self.params
            model, images, masks, view = self._batch()
            out = model(images, masks, view)
            opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-3)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            m = momentum_at(1, 2, p.ema.momentum_start, p.ema.momentum_end)
            ema_update(model.target_encoder, model.context_encoder, m)
            self._weights = torch.cat(
                [t.detach().flatten() for t in model.target_encoder.parameters()]
            )
        return self._weights


def _fmt(x: Any) -> str:
    return json.dumps(x) if not isinstance(x, float) else f"{x:.6g}"


def compare(base: Probe, variant: Probe) -> tuple[str, str]:
    """(effect, evidence) of the first aspect that differs, or ("", "") if none does."""
    a, b = base.architecture(), variant.architecture()
    if a != b:
        na, nb = sum(math.prod(s) for s in a.values()), sum(math.prod(s) for s in b.values())
        if na != nb:
            return "architecture", f"parameters {na:,} → {nb:,}"
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        return "architecture", f"tensor {diff[0]}: {a.get(diff[0])} → {b.get(diff[0])}"
    ma, mb = base.masks(), variant.masks()
    if ma != mb:
        k = next(k for k in ma if ma[k] != mb.get(k))
        return "masks", f"{k} {ma[k]:.4g} → {mb[k]:.4g}"
    la, lb = base.loss(), variant.loss()
    if la != lb:
        return "loss", f"forward loss {la[0]:.6g} → {lb[0]:.6g}"
    wa, wb = base.weights(), variant.weights()
    if wa.shape != wb.shape or not torch.equal(wa, wb):
        delta = float((wa - wb).abs().max()) if wa.shape == wb.shape else float("nan")
        return "training step", f"target weights after one step, max |Δ| {delta:.3g}"
    return "", ""


# ------------------------------------------------------------------------------------------ run
def _variants(
    raw: dict[str, Any], key: str, schema: type[Params]
) -> Iterator[tuple[Any, Params, Params]]:
    companion = COMPANIONS.get(key, {})
    base_raw = apply_overrides(raw, companion)
    value = _get(base_raw, key)
    base = _parse(base_raw, schema)
    tried = 0
    preferred = PREFERRED[key](base) if key in PREFERRED else []
    for alt in preferred + candidates(value, _annotation(schema, key)):
        try:
            variant = _parse(apply_overrides(base_raw, {key: alt}), schema)
        except ConfigError:
            continue
        yield alt, base, variant
        tried += 1
        if tried >= MAX_TRIES:
            return


def audit_params(params: Params, schema: type[Params] = Params) -> list[AuditRow]:
    """Audit every key of ``audited_keys(params)``; ``schema`` is the class ``params`` came from."""
    raw = to_dict(params)
    probes: dict[str, Probe] = {}

    def probe(p: Params) -> Probe:
        tag = p.model_dump_json()
        if tag not in probes:
            probes[tag] = Probe(p)
        return probes[tag]

    rows = []
    for key in audited_keys(params):
        value = _get(raw, key)
        row = AuditRow(key, "", f"no valid alternative to {_fmt(value)} changed anything")
        found_any = False
        for alt, base, variant in _variants(raw, key, schema):
            found_any = True
            effect, evidence = compare(probe(base), probe(variant))
            if effect:
                shown = f"{_fmt(_get(to_dict(base), key))} → {_fmt(alt)}"
                row = AuditRow(key, effect, f"{shown}: {evidence}")
                break
        if not found_any:
            row = AuditRow(key, "", f"no valid alternative value found for {_fmt(value)}")
        rows.append(row)
    return rows


def format_table(rows: list[AuditRow]) -> str:
    """The ``key | effect | evidence`` table; a key without effect shows ``NONE``."""
    lines = [("key", "effect", "evidence")] + [
        (r.key, r.effect or "NONE", r.evidence) for r in rows
    ]
    w0 = max(len(x[0]) for x in lines)
    w1 = max(len(x[1]) for x in lines)
    out = [f"{a:<{w0}} | {b:<{w1}} | {c}" for a, b, c in lines]
    out.insert(1, f"{'-' * w0}-+-{'-' * w1}-+-{'-' * 8}")
    return "\n".join(out)
