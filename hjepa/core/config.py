"""The one typed model of ``params.yaml``.

Why this module exists: the codebase this project replaces accepted misspelled keys and silently
ignored flags. Here every section forbids unknown keys, every value has a range, cross-field rules
are checked before any data is read or any model is built, and every *leaf* that code reads is
recorded, so ``hjepa dag check`` can compare what a stage really read with what ``dvc.yaml``
declares for it.

Reads are recorded only for leaves (a number, a string, a bool, a list); reading a section object
records nothing by itself. A list of sub-models (``model.hierarchy``) is one leaf, as DVC sees it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hjepa.core.errors import UserError
from hjepa.core.params_errors import format_validation_error
from hjepa.core.params_yaml import read_params_yaml

__all__ = [
    "ConfigError",
    "Params",
    "apply_overrides",
    "load_params",
    "parse_params",
    "reads",
    "reset_reads",
]

_READS: set[str] = set()


def reads() -> set[str]:
    """The dotted leaf keys read so far in this process (see module docstring)."""
    return set(_READS)


def reset_reads() -> None:
    """Forget recorded reads (tests, and stages that start a fresh record)."""
    _READS.clear()


class ConfigError(UserError, ValueError):
    """A params problem, with a message meant for a person (no traceback needed)."""


class Section(BaseModel):
    """Base of every params section: unknown keys are errors, leaf reads are recorded."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False
    )

    def _bind(self, prefix: str) -> None:
        object.__setattr__(self, "_hjepa_prefix", prefix)
        for name in type(self).model_fields:
            value = object.__getattribute__(self, name)
            if isinstance(value, Section):
                value._bind(f"{prefix}{name}.")

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if name.startswith("_") or name not in type(self).model_fields:
            return value
        try:
            prefix = object.__getattribute__(self, "_hjepa_prefix")
        except AttributeError:
            return value  # not bound (during validation, or a free-standing section)
        if not isinstance(value, Section):
            _READS.add(prefix + name)
        return value


def _range(lo: float, hi: float, lo_open: bool, hi_open: bool) -> str:
    return f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def _check_pair(
    name: str, v: tuple[float, float], lo: float, hi: float, lo_open: bool, hi_open: bool
) -> tuple[float, float]:
    a, b = v
    for x in (a, b):
        if (x < lo or (lo_open and x == lo)) or (x > hi or (hi_open and x == hi)):
            raise ValueError(
                f"{name} values must lie in {_range(lo, hi, lo_open, hi_open)}, got {list(v)}"
            )
    if a > b:
        raise ValueError(f"{name} must be [low, high] with low <= high, got {list(v)}")
    return v


# ----------------------------------------------------------------------------------------- data
class SplitParams(Section):
    train: float = Field(0.7, gt=0, lt=1)
    val: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.2, gt=0, lt=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitParams:
        total = self.train + self.val + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(
                f"train + val + test must sum to 1, got {self.train} + {self.val} + "
                f"{self.test} = {total:g}"
            )
        return self


class DataParams(Section):
    source: Literal["digits", "image_folder", "cifar10"] = "digits"
    path: str = Field("data/raw", min_length=1)
    image_size: int = Field(16, gt=0, le=1024)
    channels: Literal[1, 3] = 1
    split: SplitParams = Field(default_factory=SplitParams)
    # The same stored image under two labels: "error" stops prepare and lists examples, "drop"
    # leaves every copy of such an image out (counted in metrics/data.json).
    conflicting_duplicates: Literal["error", "drop"] = "error"


# ---------------------------------------------------------------------------------------- model
class LayerScaleParams(Section):
    use_layerscale: bool = False
    init_value: float = Field(0.1, gt=0, le=1)
    in_predictor: bool = False


class PredictorParams(Section):
    width: int = Field(64, gt=0)
    depth: int = Field(2, gt=0)
    heads: int = Field(4, gt=0)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> PredictorParams:
        if self.width % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide width ({self.width})")
        return self


class LevelParams(Section):
    depth: int = Field(gt=0)
    scale: int = Field(1, gt=0)
    weight: float = Field(1.0, gt=0)


class ModelParams(Section):
    patch_size: int = Field(2, gt=0)
    width: int = Field(128, gt=0)
    depth: int = Field(4, gt=0)
    heads: int = Field(4, gt=0)
    mlp_ratio: float = Field(4.0, gt=0)
    drop_path: float = Field(0.0, ge=0, lt=1)
    pos_embed: Literal["sincos", "learned"] = "sincos"
    # Issue 9: weight of the VICReg variance-covariance term on the context encoder's pooled
    # embeddings (hjepa.models.regularizers); 0 = plain H-JEPA loss.
    vicreg_weight: float = Field(0.1, ge=0, le=100)
    # Issue 9: weight of the two-view invariance loss (hjepa.models.hjepa.HJEPA.invariance): the
    # pooled context embedding of one augmented view predicts, through a small MLP head, the EMA
    # target encoder's pooled embedding of a second, independently augmented view; 0 = off.
    invariance_weight: float = Field(1.0, ge=0, le=100)
    layerscale: LayerScaleParams = Field(default_factory=LayerScaleParams)
    predictor: PredictorParams = Field(default_factory=PredictorParams)
    hierarchy: list[LevelParams] = Field(
        default_factory=lambda: [
            LevelParams(depth=2, scale=2, weight=0.5),
            LevelParams(depth=4, scale=1, weight=1.0),
        ],
        min_length=1,
    )

    @model_validator(mode="after")
    def _shapes(self) -> ModelParams:
        if self.width % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide width ({self.width})")
        seen = set()
        for i, level in enumerate(self.hierarchy):
            if level.depth > self.depth:
                raise ValueError(
                    f"hierarchy[{i}].depth is {level.depth} but the encoder has depth "
                    f"{self.depth}; level depths must be in 1..{self.depth}"
                )
            key = (level.depth, level.scale)
            if key in seen:
                raise ValueError(f"hierarchy[{i}] repeats level (depth, scale) = {key}")
            seen.add(key)
        return self


# ----------------------------------------------------------------------------------------- mask
class MaskParams(Section):
    num_targets: int = Field(4, gt=0, le=16)
    target_scale: tuple[float, float] = (0.15, 0.2)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    context_scale: tuple[float, float] = (0.85, 1.0)
    min_keep: int = Field(4, gt=0)
    context_batching: Literal["pad", "trim"] = "pad"

    @field_validator("target_scale", "context_scale")
    @classmethod
    def _scale(cls, v: tuple[float, float], info: Any) -> tuple[float, float]:
        return _check_pair(info.field_name, v, 0.0, 1.0, True, False)

    @field_validator("target_aspect")
    @classmethod
    def _aspect(cls, v: tuple[float, float], info: Any) -> tuple[float, float]:
        return _check_pair(info.field_name, v, 0.0, 10.0, True, False)


# ---------------------------------------------------------------------------------------- train
class AugmentParams(Section):
    crop_scale: tuple[float, float] = (0.3, 1.0)
    hflip: bool = False
    # Horizontal shear drawn from ±shear_deg degrees (0 = off): a font's slant.
    shear_deg: float = Field(0.0, ge=0, le=45)
    # Each view's intensity above black scaled by a factor drawn log-uniformly from
    # [1 / (1 + brightness), 1 + brightness] (0 = off): a garment's shade, the lighting.
    brightness: float = Field(0.0, ge=0, le=1)

    @field_validator("crop_scale")
    @classmethod
    def _crop(cls, v: tuple[float, float], info: Any) -> tuple[float, float]:
        return _check_pair(info.field_name, v, 0.0, 1.0, True, False)


class TrainParams(Section):
    epochs: int = Field(40, gt=0)
    batch_size: int = Field(32, gt=0)
    lr: float = Field(1e-3, gt=0, lt=1)
    min_lr: float = Field(1e-6, ge=0, lt=1)
    # Clamped to epochs - 1 (with a logged notice, see ``warmup_epochs_used``), so lowering
    # train.epochs alone for a quick run needs no second override.
    warmup_epochs: int = Field(2, ge=0)
    weight_decay_start: float = Field(0.04, ge=0, lt=10)
    weight_decay_end: float = Field(0.4, ge=0, lt=10)
    grad_clip: float = Field(1.0, ge=0)
    checkpoint_every: int = Field(5, gt=0)
    keep_checkpoints: int = Field(2, gt=0)
    num_workers: int = Field(0, ge=0, le=64)
    log_every: int = Field(10, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Online k-NN on the val split every N epochs (0 = off); see hjepa.train.diagnostics.
    monitor_every: int = Field(0, ge=0)
    # torch.compile each transformer block (hjepa.train.device_setup.compile_blocks).
    compile: bool = False
    augment: AugmentParams = Field(default_factory=AugmentParams)

    @property
    def warmup_epochs_used(self) -> int:
        """``warmup_epochs``, at most ``epochs - 1``: at least one epoch decays from the peak."""
        return min(self.warmup_epochs, self.epochs - 1)

    @model_validator(mode="after")
    def _schedule(self) -> TrainParams:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        return self


class EmaParams(Section):
    """Momentum of the EMA target encoder (the encoder that is kept and probed).

    The defaults hold it at 0.99: I-JEPA's 0.996 → 1.0 ramp is made for ~10^5 steps; over the
    ~1,560 of the default run it freezes the EMA well behind the context encoder (RESULTS.md).
    """

    momentum_start: float = Field(0.99, ge=0, le=1)
    momentum_end: float = Field(0.99, ge=0, le=1)

    @model_validator(mode="after")
    def _order(self) -> EmaParams:
        if self.momentum_start > self.momentum_end:
            raise ValueError(
                f"momentum_start ({self.momentum_start}) must not exceed "
                f"momentum_end ({self.momentum_end})"
            )
        return self


# ---------------------------------------------------------------------------------------- probe
class ProbeParams(Section):
    features: Literal["last", "hierarchy", "last_k"] = "last"
    last_k: int = Field(2, gt=0)
    # The linear probe's readout (pool_grid) and the k-NN's (knn_pool_grid), each g = means of
    # g x g cells of the token grid: cells keep the layout a linear map can use, while a k-NN's
    # cosine over cells is dominated by where things sit, which a random init reads as well
    # (RESULTS.md, session 15). Both encoders are always read the same way.
    pool_grid: int = Field(1, gt=0)
    knn_pool_grid: int = Field(1, gt=0)
    c_values: list[float] = Field(
        default_factory=lambda: [0.01, 0.1, 1.0, 10.0, 100.0], min_length=1
    )
    # L-BFGS iterations per fit at most (hjepa.eval.linear; a fit stops earlier at tolerance).
    max_iter: int = Field(1000, gt=0)
    # Issue 9: how C is chosen. 0 = by accuracy on the val split, final fit on train; k >= 2 =
    # by k-fold cross-validation on train + val, final fit on train + val (hjepa.eval.probes).
    cv_folds: int = Field(5, ge=0, le=20)
    knn_k: int = Field(20, gt=0)
    knn_temperature: float = Field(0.07, gt=0)
    batch_size: int = Field(256, gt=0)
    # The raw-pixel baseline's dimensions at most: more pixels (H x W x C) are mapped by a fixed
    # Gaussian random projection drawn from ``seed`` (hjepa.eval.features.pixel_projection).
    pixel_dims: int = Field(512, gt=0)

    @field_validator("c_values")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(c <= 0 for c in v):
            raise ValueError(f"c_values must all be > 0, got {v}")
        return v

    @field_validator("cv_folds")
    @classmethod
    def _folds(cls, v: int) -> int:
        if v == 1:
            raise ValueError("cv_folds must be 0 (choose C on the val split) or 2..20 (k-fold)")
        return v


# ----------------------------------------------------------------------------------------- root
class Params(Section):
    seed: int = Field(0, ge=0, lt=2**32)
    data: DataParams = Field(default_factory=DataParams)
    model: ModelParams = Field(default_factory=ModelParams)
    mask: MaskParams = Field(default_factory=MaskParams)
    train: TrainParams = Field(default_factory=TrainParams)
    ema: EmaParams = Field(default_factory=EmaParams)
    probe: ProbeParams = Field(default_factory=ProbeParams)

    @model_validator(mode="after")
    def _cross(self) -> Params:
        size, patch = self.data.image_size, self.model.patch_size
        if size % patch:
            raise ValueError(
                f"data.image_size ({size}) must be divisible by model.patch_size ({patch})"
            )
        grid = size // patch
        for i, level in enumerate(self.model.hierarchy):
            if grid % level.scale:
                raise ValueError(
                    f"model.hierarchy[{i}].scale ({level.scale}) must divide the token grid "
                    f"side ({grid} = data.image_size {size} / model.patch_size {patch})"
                )
        if self.probe.features == "last_k" and self.probe.last_k > self.model.depth:
            raise ValueError(
                f"probe.last_k ({self.probe.last_k}) exceeds model.depth ({self.model.depth})"
            )
        return self

    @property
    def grid_size(self) -> int:
        """Token grid side: image size over patch size."""
        return self.data.image_size // self.model.patch_size


# ------------------------------------------------------------------------------------- loading
def parse_params(raw: Any, source: str = "params") -> Params:
    """Validate a parsed params mapping; raise ConfigError with a readable message."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        params = Params.model_validate(dict(raw))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, Params)) from None
    params._bind("")
    return params


def read_raw_params(path: str | Path = "params.yaml") -> Any:
    """The YAML content of a params file, not yet validated (hjepa.core.params_yaml: strict)."""
    return read_params_yaml(path)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file (see ``parse_params``)."""
    return parse_params(read_raw_params(path), str(path))


def parse_assignments(items: Iterable[str], flag: str = "--set") -> dict[str, Any]:
    """``key=value`` strings (a command line's repeated ``flag``) → {dotted key: YAML-parsed
    value}, ready for ``apply_overrides``; UserError naming the malformed item."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{flag} {item!r}: expected key=value (dotted key, YAML value)")
        out[key.strip()] = yaml.safe_load(value)
    return out


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return a deep copy of ``raw`` with dotted-key overrides applied (``a.b.c: value``).

    A key whose parent is missing or not a section is an error naming the key; validation of the
    result (unknown leaf keys, ranges) is ``parse_params``'s job.
    """
    out: dict[str, Any] = json.loads(json.dumps(raw))
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node: Any = out
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part) if isinstance(node, dict) else None
            if nxt is None:
                nxt = {}
                node[part] = nxt
            if not isinstance(nxt, dict):
                raise ConfigError(
                    f"override '{dotted}': '{'.'.join(parts[: i + 1])}' is a value, not a section"
                )
            node = nxt
        node[parts[-1]] = value
    return out


def to_dict(params: Params) -> dict[str, Any]:
    """Plain, JSON-friendly dict of all params, defaults included (reads are not recorded)."""
    return json.loads(params.model_dump_json())


def leaf_keys(params: Params) -> list[str]:
    """Every leaf key of the params as DVC names them (lists are leaves)."""

    def walk(node: Any, prefix: str) -> Iterable[str]:
        if isinstance(node, dict):
            for k, v in node.items():
                yield from walk(v, f"{prefix}{k}.")
        else:
            yield prefix[:-1]

    return sorted(walk(to_dict(params), ""))
