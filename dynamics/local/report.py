"""The short report printed at the end of a ``--local`` run: where things are and what happened."""

from __future__ import annotations

from typing import Any

from dynamics.constants import Stage
from dynamics.errors import StorageError
from dynamics.spec.model import RunSpec
from dynamics.spec.reduced import reduced_note
from dynamics.storage import objects as storage
from dynamics.storage.layout import RunPaths


def _read(uri: str, cfg: storage.StorageConfig) -> dict[str, Any] | None:
    try:
        return storage.read_json(uri, cfg)
    except StorageError:
        return None


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


SHOWN_PROBLEMS = 10  # named in the report; every one is in the embed parts' stats.json


def _embed_stats(paths: RunPaths, cfg: storage.StorageConfig) -> list[dict[str, Any]]:
    uris = sorted(u for u in storage.list_uris(paths.embed_dir(), cfg) if u.endswith(".stats.json"))
    return [_read(uri, cfg) or {} for uri in uris]


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def reduced_lines(spec: RunSpec, paths: RunPaths, cfg: storage.StorageConfig) -> list[str]:
    """What the embed stage's reduced shard copies are: their size, what they cost, and why they are faithful."""
    parts = [s["reduced"] for s in _embed_stats(paths, cfg) if s.get("reduced")]
    if not parts:
        return []
    copies, originals = sum(int(p["bytes"]) for p in parts), sum(int(p["original_bytes"]) for p in parts)
    share = f", {copies / originals:.1%} of the {_mib(originals)} of original shards" if originals else ""
    return [f"\nreduced shard copies (phase 1 reads them): short side {parts[0]['short_side']} px, "
            f"{_mib(copies)}{share}",
            f"  {reduced_note(spec)}; crops cut from them match the originals' at ~37 dB PSNR "
            "(tests/stages/test_embed_reduced.py)"]


def data_problem_lines(paths: RunPaths, cfg: storage.StorageConfig) -> list[str]:
    """Corrupt or skipped data found by the embed stage, by kind, with the first few named."""
    counts: dict[str, int] = {}
    problems: list[dict[str, str]] = []
    lost = expected = 0
    for stats in _embed_stats(paths, cfg):
        for kind, n in stats.get("skipped", {}).items():
            counts[kind] = counts.get(kind, 0) + int(n)
        problems += stats.get("problems", [])
        samples = stats.get("samples") or {}
        lost += int(samples.get("lost", 0))
        expected += int(samples.get("expected", 0))
    if not counts:
        return []
    # Both counts: problems by kind (an unreadable shard is one), and the samples they cost.
    lines = ["\ndata problems: " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))]
    if expected:
        lines.append(f"  samples lost: {lost} of {expected} ({_pct(lost / expected)}; unreadable or truncated "
                     "shards count the samples they held)")
    for p in problems[:SHOWN_PROBLEMS]:
        member = f" ({p['member']})" if p.get("member") else ""
        lines.append(f"  {p['kind']}: {p['shard']}{member}")
    if sum(counts.values()) > SHOWN_PROBLEMS:
        lines.append(f"  all named in {paths.embed_dir()}/part-*.stats.json")
    return lines


def epoch_kind(alpha: float | None) -> str:
    """What an epoch of the run is: ``uniform`` at alpha = 1 (every cluster keeps its share), else ``DynamiCS``."""
    return "uniform" if alpha == 1 else "DynamiCS"


def _diagnostic_lines(sampling: dict[str, Any] | None, fit: dict[str, Any] | None, kind: str = "DynamiCS") -> list[str]:
    """Gini before/after, whether the refinement threshold fits the embedding's cosines, the clusters'
    separation and the distance from a uniform epoch (no warning on the latter for a uniform run by choice)."""
    lines = []
    if sampling:
        lines.append(f"  cluster-size Gini: {sampling['gini_before']:.2f} (data) -> {sampling['gini_after']:.2f} "
                     f"({kind} epoch)")
    if sampling and "inclusion_tv_from_uniform" in sampling:
        lines.append(f"  expected epoch vs a uniform one: total variation {sampling['inclusion_tv_from_uniform']:.3f} "
                     "(the share of an epoch's draws that sampling moves between samples)")
    diag = (fit or {}).get("diagnostics")
    if diag and diag.get("centroid_nearest_other_cosine"):
        near = diag["nearest_kept_centroid_cosine"]
        other = diag["centroid_nearest_other_cosine"]
        lines.append(f"  embedding cosines: sample to its centroid median {near.get('q50')}, centroid to nearest "
                     f"other median {other.get('q50')} (refinement threshold {diag['threshold']}; "
                     f"{_pct(diag['share_centroids_with_neighbour_above_threshold'])} of centroids have a "
                     "neighbour above it)")
    sep = (diag or {}).get("separation")
    if sep:
        lines.append(f"  cluster separation: a sample's cosine to its own centroid median "
                     f"{sep['own_centroid_cosine_median']}, to the nearest other "
                     f"{sep['nearest_other_centroid_cosine_median']} (margin {sep['separation_margin_median']})")
    # Label-free warnings (dynamics.core.diagnostics.weak_embedding_warning): the Gini can fall while the
    # concept mix barely moves, so say plainly when the embedding gives the sampler little to work with.
    warnings = ((diag or {}).get("warning"), None if kind == "uniform" else (sampling or {}).get("warning"))
    lines += [f"  WARNING: {w}" for w in warnings if w]
    return lines


def _class_lines(classes: dict[str, Any] | None) -> list[str]:
    """sample.classReport: head/tail classes' share of the data vs of each DynamiCS epoch, and purity."""
    if not classes:
        return []
    return [f"  classes ({classes['definition']}): head {_pct(classes['head_data_share'])} of the data -> "
            f"{_pct(classes['head_epoch_share'])} of each epoch, tail {_pct(classes['tail_data_share'])} -> "
            f"{_pct(classes['tail_epoch_share'])}; cluster purity {classes['purity']:.2f}"]


def sampling_lines(report: dict[str, Any], fit: dict[str, Any] | None, plot: str) -> list[str]:
    """The scale stage's report in words; a uniform run (alpha = 1) says uniform, not DynamiCS."""
    kind = epoch_kind(report.get("alpha"))
    return [
        f"\n{kind} sampling (alpha={report.get('alpha')}, budget={report.get('budget')}): "
        f"N={report.get('N')} samples in {report.get('K_nonempty')} clusters",
        f"  expected samples per epoch: {report.get('expected_per_epoch', 0):.0f}",
        f"  share of the largest 10% clusters: {_pct(report.get('share_top10pct_before'))} of the data "
        f"(and of a uniform epoch at the same budget) -> {_pct(report.get('share_top10pct_after'))} "
        f"of each {kind} epoch",
        *_diagnostic_lines(report.get("diagnostics"), fit, kind),
        *_class_lines(report.get("classes")),
        f"  cluster-size plot (sizes, uniform, DynamiCS): {plot}",
    ]


def summary_lines(spec: RunSpec, paths: RunPaths, cfg: storage.StorageConfig,
                  timings: dict[Stage, float | None]) -> list[str]:
    """Lines of the end-of-run report (pure apart from reading the run's JSON artifacts)."""
    lines = [f"\nrun '{spec.name}' complete. Artifacts under {paths.root}/"]
    for stage, secs in timings.items():
        lines.append(f"  {stage.value:<12} {'skipped (already complete)' if secs is None else f'{secs:7.1f}s'}")
    lines += data_problem_lines(paths, cfg)
    lines += reduced_lines(spec, paths, cfg)
    report = _read(paths.report, cfg)
    if report:
        lines += sampling_lines(report, _read(paths.fit_json, cfg), paths.plot)
    marker = _read(paths.train_marker, cfg)
    if marker:
        phases = ", ".join(f"{name}: {samples} samples in {steps} steps" for name, samples, steps in
                           zip(marker["phases"], marker["samples"], marker["steps"], strict=True))
        lines.append(f"\ntraining: {sum(marker['samples'])} samples seen ({phases})")
        lines.append(f"  final checkpoint (open_clip format): {marker['final_checkpoint']}")
    results = _read(paths.eval_results, cfg)
    if results:
        lines.append("\nzero-shot evaluation:")
        for name, r in results.get("datasets", {}).items():
            lines.append(f"  {name}: top-1 {_pct(r.get('top1'))} (chance {_pct(r.get('chance'))}), "
                         f"head classes {_pct(r.get('head_top1'))}, tail classes {_pct(r.get('tail_top1'))}")
    return lines


def print_summary(spec: RunSpec, paths: RunPaths, cfg: storage.StorageConfig,
                  timings: dict[Stage, float | None]) -> None:
    """Print the end-of-run report."""
    print("\n".join(summary_lines(spec, paths, cfg, timings)), flush=True)
