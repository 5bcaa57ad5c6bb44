"""Assemble ``reports/report.md`` and its figures from the pipeline's metrics and logs.

The report prints the resolved params as a whole (its DVC dep is the whole ``params.yaml``), so it
reads them as a plain dict and records no per-key reads; every other number comes from the metric
files the earlier stages wrote.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hjepa.core.io import write_text
from hjepa.report import figures
from hjepa.report.inputs import ReportInputs, flatten, load_inputs
from hjepa.report.markdown import fmt, image, pct, table

__all__ = ["FIGURE_NAMES", "build_report", "encoder_param_count", "render"]

FIGURE_NAMES = {
    "loss": "loss_curves.png",
    "schedules": "schedules.png",
    "gammas": "layerscale_gamma.png",
    "throughput": "throughput.png",
    "probe": "probe_comparison.png",
    "confusion": "confusion_matrix.png",
}


def encoder_param_count(params: dict[str, Any]) -> int:
    """Trainable parameters of the ViT encoder described by ``params`` (timm layout, no class
    token, no head; fixed sin-cos position embeddings are not trainable)."""
    model, data = params["model"], params["data"]
    d, p, c = model["width"], model["patch_size"], data["channels"]
    hidden = int(d * model["mlp_ratio"])
    tokens = (data["image_size"] // p) ** 2
    per_block = (
        2 * d  # norm1
        + 3 * d * d
        + 3 * d  # qkv
        + d * d
        + d  # attention projection
        + 2 * d  # norm2
        + d * hidden
        + hidden  # fc1
        + hidden * d
        + d  # fc2
    )
    if model["layerscale"]["use_layerscale"]:
        per_block += 2 * d  # ls1.gamma, ls2.gamma
    total = c * p * p * d + d + model["depth"] * per_block + 2 * d  # patch embed, blocks, norm
    if model["pos_embed"] == "learned":
        total += tokens * d
    return total


def _probe_rows(probe: dict[str, Any]) -> list[tuple[str, float | None, float | None]]:
    rows = [("pretrained (EMA)", probe.get("linear_top1"), probe.get("knn_top1"))]
    for key, label in (("random_init", "random init"), ("pixels", "raw pixels")):
        sub = probe.get(key) or {}
        rows.append((label, sub.get("linear_top1"), sub.get("knn_top1")))
    plain = (probe.get("pixels") or {}).get("knn_top1_plain")
    if plain is not None:
        rows.append(("raw pixels, plain k-NN", None, plain))
    return rows


def _data_tables(data: dict[str, Any]) -> list[str]:
    """Scalars as one key/value table; a ``{split: {class: n}}``-shaped entry (e.g. per-class
    counts) as its own class × split table instead of dozens of dotted rows."""
    scalars: dict[str, Any] = {}
    out: list[str] = []
    for key, value in data.items():
        inner = value.values() if isinstance(value, dict) else ()
        if inner and all(isinstance(v, dict) for v in inner):
            cols = list(value)
            rows = list(dict.fromkeys(r for v in value.values() for r in v))
            out += [
                f"`{key}`:",
                "",
                table(["", *cols], [[r, *[value[c].get(r) for c in cols]] for r in rows]),
                "",
            ]
        else:
            scalars.update(flatten(value, f"{key}."))
    return [table(["key", "value"], scalars.items()), "", *out]


def _what_was_run(inp: ReportInputs) -> list[str]:
    params, model = inp.params, inp.params["model"]
    ls = model["layerscale"]
    ls_text = "off"
    if ls["use_layerscale"]:
        ls_text = f"on, init {ls['init_value']:g}"
        ls_text += " (also in predictor)" if ls["in_predictor"] else ""
    count = inp.pretrain.get("encoder_params") or encoder_param_count(params)
    grid = params["data"]["image_size"] // model["patch_size"]
    model_rows = [
        ("encoder", f"ViT, width {model['width']}, depth {model['depth']}, {model['heads']} heads"),
        ("patch / token grid", f"{model['patch_size']} px / {grid}×{grid} = {grid * grid} tokens"),
        ("encoder parameters", f"{count:,}"),
        (
            "hierarchy levels (depth, scale, weight)",
            ", ".join(f"({h['depth']}, {h['scale']}, {h['weight']:g})" for h in model["hierarchy"]),
        ),
        ("LayerScale", ls_text),
    ]
    return [
        "## What was run",
        "",
        "### Model",
        "",
        table(["", "value"], model_rows),
        "",
        "### Data",
        "",
        *_data_tables(inp.data),
    ]


def _resolved_params(inp: ReportInputs) -> list[str]:
    return [
        "## Resolved parameters (`params.yaml` with defaults)",
        "",
        table(["key", "value"], sorted(flatten(inp.params).items())),
        "",
    ]


def _pretraining(inp: ReportInputs, figs: dict[str, Path | None], rel: str) -> list[str]:
    levels = figures.level_columns(inp.log)
    final = inp.log.iloc[-1] if len(inp.log) else None
    loss_rows = [("total", inp.pretrain.get("loss"), None if final is None else final["loss"])]
    for col in levels:
        loss_rows.append(
            (col.replace("loss_", ""), inp.pretrain.get(col), None if final is None else final[col])
        )
    if final is not None and "reg_loss" in inp.log.columns:
        loss_rows.append(("regulariser (VICReg, weighted)", None, final["reg_loss"]))
    if final is not None and figures.uses_invariance(inp.log):
        loss_rows.append(("two-view invariance (unweighted)", None, final["inv_loss"]))
    out = [
        "## Pretraining",
        "",
        table(["loss", "final (pretrain.json)", "last logged step"], loss_rows),
        "",
    ]
    if figs["schedules"]:
        out += ["### Schedules", "", image("schedules", f"{rel}/{FIGURE_NAMES['schedules']}"), ""]
    out += ["### LayerScale", ""]
    if figs["gammas"]:
        out += [
            "Mean |gamma| per block (context and EMA target encoders):",
            "",
            image("LayerScale gamma", f"{rel}/{FIGURE_NAMES['gammas']}"),
            "",
        ]
    else:
        out += ["No gamma columns in the training log (LayerScale is off).", ""]
    return out


def _pooling(probe: dict[str, Any]) -> str:
    """How the token grid became each probe's feature vector (``probe.pool_grid`` for the
    linear probe, ``probe.knn_pool_grid`` for the k-NN), and its size."""
    grid = probe.get("pool_grid")
    if grid is None:
        return "—"
    linear = _readout(grid, probe.get("feature_dim"))
    knn_grid = probe.get("knn_pool_grid", grid)
    if knn_grid == grid:
        return linear
    return f"linear: {linear}; k-NN: {_readout(knn_grid, probe.get('knn_feature_dim'))}"


def _readout(grid: int, dim: int | None) -> str:
    how = "global mean of the tokens" if grid == 1 else f"means of {grid}×{grid} spatial cells"
    return how if dim is None else f"{how} ({dim}-d)"


def _pixel_baseline(probe: dict[str, Any]) -> str:
    """How the raw-pixel baseline was probed: all pixels, or a random projection of them."""
    pixels = probe.get("pixels") or {}
    dims, raw = pixels.get("dims"), pixels.get("raw_dims")
    if dims is None or raw is None:
        return "—"
    if dims == raw:
        return f"{raw} pixels as they are"
    return f"{raw} pixels, randomly projected to {dims} dims (fixed Gaussian matrix from `seed`)"


def _results(inp: ReportInputs, rel: str) -> list[str]:
    """The answer first: the probe against its baselines, the gain, and the loss curves."""
    probe = inp.probe
    rows = [(name, pct(lin), pct(knn)) for name, lin, knn in _probe_rows(probe)]
    gain = probe.get("gain_over_random_init")
    gain_text = "—" if gain is None else f"{100 * gain:+.2f} points"
    ls = inp.params["model"]["layerscale"]
    summary = [
        ("gain over random init (linear)", gain_text),
        ("LayerScale", f"on, init {ls['init_value']:g}" if ls["use_layerscale"] else "off"),
        ("linear probe C", fmt(probe.get("best_c"))),
        ("C chosen by", fmt(probe.get("c_selection"))),
        ("features", fmt(probe.get("features"))),
        ("pooling", _pooling(probe)),
        ("pixel baseline", _pixel_baseline(probe)),
    ]
    out = [
        "## Results (frozen features, test split)",
        "",
        table(["features from", "linear top-1", "k-NN top-1"], rows),
        "",
    ]
    if gain is not None and gain <= 0:
        out += ["**Warning:** the pretrained encoder does not beat its random init.", ""]
    out += [
        table(["", "value"], summary),
        "",
        image("probe comparison", f"{rel}/{FIGURE_NAMES['probe']}"),
        "",
        image("loss curves", f"{rel}/{FIGURE_NAMES['loss']}"),
        "",
        "Compare runs (e.g. LayerScale on against off) with `dvc exp show`, `dvc metrics diff` "
        "or `hjepa compare`.",
        "",
    ]
    return out


def _evaluation(inp: ReportInputs, rel: str) -> list[str]:
    probe = inp.probe
    out = ["## Evaluation details", ""]
    per_class = probe.get("per_class") or {}
    if per_class:
        out += [
            "### Per-class linear-probe accuracy",
            "",
            table(["class", "top-1"], [(k, pct(v)) for k, v in per_class.items()]),
            "",
        ]
    out += [
        "### Confusion matrix",
        "",
        image("confusion matrix", f"{rel}/{FIGURE_NAMES['confusion']}"),
        "",
    ]
    return out


def _throughput(inp: ReportInputs, figs: dict[str, Path | None], rel: str) -> list[str]:
    keys = ("epochs", "steps", "wall_time_s", "images_per_s", "target_std")
    rows = [(k, inp.pretrain.get(k)) for k in keys if k in inp.pretrain]
    out = ["## Throughput and wall time", "", table(["", "value"], rows), ""]
    if figs["throughput"]:
        out += [image("throughput", f"{rel}/{FIGURE_NAMES['throughput']}"), ""]
    return out


def _collapse_warning(pretrain: dict[str, Any]) -> list[str]:
    """A warning at the top when pretraining detected dimensional collapse (the ``collapse`` block
    of ``metrics/pretrain.json``, written by hjepa.train.collapse); nothing otherwise."""
    c = pretrain.get("collapse") or {}
    if not c.get("detected"):
        return []
    rank, width = f"{c['effective_rank']:.1f}", c["width"]
    if c.get("reason") == "falling":
        what = f"had fallen to {rank} of {width}, below a quarter of its best so far "
        what += f"({c['best_effective_rank']:.1f})"
    else:
        what = f"was {rank} of {width}, below the threshold of {c['threshold']:.1f}"
    return [
        f"> **Warning: dimensional collapse.** In epoch {c['epoch']} of {pretrain.get('epochs')} "
        f"the effective rank of the pooled features {what}: the encoder maps every image into a "
        "few directions, and the probes below read those. (`metrics/pretrain.json`: `collapse`.)",
        "",
    ]


def render(inp: ReportInputs, figs: dict[str, Path | None], rel: str = "figures") -> str:
    """The report's markdown, figures referenced relative to the report file."""
    lines = [
        "# H-JEPA experiment report",
        "",
        "Generated by `python -m pipeline.report` from `metrics/` and `params.yaml`.",
        "",
    ]
    lines += _collapse_warning(inp.pretrain)
    lines += _results(inp, rel)
    lines += _pretraining(inp, figs, rel)
    lines += _evaluation(inp, rel)
    lines += _throughput(inp, figs, rel)
    lines += _what_was_run(inp)
    lines += _resolved_params(inp)
    return "\n".join(lines)


def build_report(
    root: Path, out_file: Path, figure_dir: Path, params: dict[str, Any] | None = None
) -> dict[str, Path | None]:
    """Draw the figures into ``figure_dir`` and write ``out_file``; returns the figure paths.

    ``params`` is the resolved params dict (``hjepa.core.config.to_dict``); by default
    ``root/params.yaml`` is validated and resolved.
    """
    inp = load_inputs(root, params)
    class_names = list((inp.probe.get("per_class") or {}).keys())
    figs: dict[str, Path | None] = {
        "loss": figures.loss_curves(inp.log, figure_dir / FIGURE_NAMES["loss"]),
        "schedules": figures.schedules(inp.log, figure_dir / FIGURE_NAMES["schedules"]),
        "gammas": figures.layerscale_gammas(inp.log, figure_dir / FIGURE_NAMES["gammas"]),
        "throughput": figures.throughput(inp.log, figure_dir / FIGURE_NAMES["throughput"]),
        "probe": figures.probe_bars(_probe_rows(inp.probe), figure_dir / FIGURE_NAMES["probe"]),
        "confusion": figures.confusion_matrix(
            inp.confusion, class_names, figure_dir / FIGURE_NAMES["confusion"]
        ),
    }
    # Stale figures from an earlier run (e.g. gammas when LayerScale is now off) must not linger.
    for key, name in FIGURE_NAMES.items():
        if figs[key] is None:
            (figure_dir / name).unlink(missing_ok=True)
    rel = os.path.relpath(Path(figure_dir).resolve(), Path(out_file).resolve().parent)
    write_text(out_file, render(inp, figs, Path(rel).as_posix()))
    return figs
