"""From measurements to a diagnosis: which stage is the bottleneck, the evidence, and what to change."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .measure import Measurements, Point

BOTTLENECKS = ("input", "model", "output")
NOISE = 0.05  # gains below this are within run-to-run noise on a busy machine: not worth a flag


@dataclass
class Recommendation:
    """One concrete change (or confirmation) with its measured expected gain (+0.35 = 35% more rows/s)."""

    kind: str  # "batch_size", "threads", "xla", "input_format", "per_row", "model_ops", "output"
    text: str
    gain: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "text": self.text,
            "gain": None if self.gain is None else round(self.gain, 4),
        }


@dataclass
class Settings:
    """The settings doctor recommends for `tfpredict predict`, and the rows/s measured with them."""

    batch_size: int
    threads: int | None
    inter_op_threads: int | None
    xla: bool
    rows_per_s: float | None
    gain: float | None  # over the defaults, measured end to end on the sample

    def flags(self) -> list[str]:
        flags = ["--batch-size", str(self.batch_size)]
        if self.threads is not None:
            flags += ["--threads", str(self.threads)]
        if self.inter_op_threads is not None:
            flags += ["--inter-op-threads", str(self.inter_op_threads)]
        if self.xla:
            flags.append("--xla")
        return flags

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "threads": self.threads,
            "inter_op_threads": self.inter_op_threads,
            "xla": self.xla,
            "rows_per_s": None if self.rows_per_s is None else round(self.rows_per_s, 1),
            "gain": None if self.gain is None else round(self.gain, 4),
            "flags": self.flags(),
        }


@dataclass
class Verdict:
    bottleneck: str
    evidence: str
    seconds_per_million: dict[str, float] = field(default_factory=dict)


def _rate(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f} rows/s"


def _pct(gain: float) -> str:
    return f"{gain * 100:+.0f}%"


def _times(x: float) -> str:
    return f"{x:.1f}x" if x < 10 else f"{x:,.0f}x"


def verdict(m: Measurements) -> Verdict:
    """The slowest of input (read + conversion), model and output (writing), by seconds per row."""
    s = m.stages
    per_row = {
        "input": 1 / s["read"].rows_per_s + 1 / s["convert"].rows_per_s,
        "model": 1 / s["model"].rows_per_s,
        "output": 1 / s["write"].rows_per_s,
    }
    ranked = sorted(per_row, key=lambda k: -per_row[k])
    worst = ranked[0]
    runner_up = "model" if worst != "model" else ranked[1]  # "the input is 9x slower than the model"
    factor = per_row[worst] / per_row[runner_up] if per_row[runner_up] > 0 else float("inf")
    rates = {k: 1 / v for k, v in per_row.items()}
    parts = [
        f"{s['read'].label}: {_rate(s['read'].rows_per_s)}, "
        f"feature conversion: {_rate(s['convert'].rows_per_s)} "
        f"(input together: {_rate(rates['input'])})",
        f"{s['model'].label}: {_rate(rates['model'])}",
        f"{s['write'].label}: {_rate(rates['output'])}",
    ]
    names = {"input": "the input", "model": "the model", "output": "writing the output"}
    evidence = "; ".join(parts) + f" — {names[worst]} is {_times(factor)} slower than {names[runner_up]}"
    e2e = s.get("end_to_end")
    if e2e is not None:
        evidence += f"; the pipelined job ran at {_rate(e2e.rows_per_s)}"
    return Verdict(worst, evidence, {k: v * 1e6 for k, v in per_row.items()})


def _best(points: list[Point]) -> Point | None:
    measured = [p for p in points if p.rows_per_s]
    return max(measured, key=lambda p: p.rows_per_s or 0.0) if measured else None


def recommended_settings(m: Measurements, bottleneck: str) -> Settings:
    """The best setting measured end to end (the job on the sample); XLA when it helps a model-bound job."""
    default = m.end_to_end_sweep[0] if m.end_to_end_sweep else None
    best = _best(m.end_to_end_sweep)
    if best is None or default is None:
        b = _best(m.batch_sweep)
        t = _best(m.thread_sweep)
        return Settings(
            b.settings["batch_size"] if b else m.batch_size,
            t.settings["threads"] if t else None,
            t.settings["inter_op_threads"] if t else None,
            False,
            None,
            None,
        )
    if (best.rows_per_s or 0) < (default.rows_per_s or 0) * (1 + NOISE):
        best = default  # not measurably better than the defaults: keep them
    gain = (best.rows_per_s or 0) / (default.rows_per_s or 1) - 1
    xla = _xla_gain(m)
    use_xla = bottleneck == "model" and xla is not None and xla > 0.05
    return Settings(
        best.settings["batch_size"],
        best.settings["threads"],
        best.settings["inter_op_threads"],
        use_xla,
        best.rows_per_s,
        gain,
    )


def _xla_gain(m: Measurements) -> float | None:
    if len(m.xla_sweep) < 2 or not m.xla_sweep[0].rows_per_s or not m.xla_sweep[1].rows_per_s:
        return None
    return m.xla_sweep[1].rows_per_s / m.xla_sweep[0].rows_per_s - 1


def _threads_text(threads: int | None, inter: int | None) -> str:
    if threads is None and inter is None:
        return "TensorFlow's default thread pools"
    parts = []
    if threads is not None:
        parts.append(f"--threads {threads}")
    if inter is not None:
        parts.append(f"--inter-op-threads {inter}")
    return " ".join(parts)


def recommendations(m: Measurements, v: Verdict, chosen: Settings) -> list[Recommendation]:
    """What to change, topic by topic (each a measured figure), in the report's order."""
    recs: list[Recommendation] = []
    default = m.end_to_end_sweep[0] if m.end_to_end_sweep else None
    at_default_threads = {
        p.settings["batch_size"]: p
        for p in m.end_to_end_sweep
        if p.settings["threads"] is None and p.settings["inter_op_threads"] is None
    }
    for topic in (_batch_size, _threads, _xla, _input_format, _output, _per_row, _model_ops):
        topic(recs, m, v, chosen, default, at_default_threads)
    return recs


def _batch_size(
    recs: list[Recommendation],
    m: Measurements,
    v: Verdict,
    chosen: Settings,
    default: Point | None,
    at_default_threads: dict[Any, Point],
) -> None:
    """Batch size: measured end to end (default threads), with the model-alone curve as backing."""
    best_model = _best(m.batch_sweep)
    model_note = ""
    if best_model is not None:
        model_note = (
            f" (the model alone peaks at batch {best_model.settings['batch_size']:,}: "
            f"{_rate(best_model.rows_per_s)})"
        )
    base = at_default_threads.get(m.batch_size)
    at_chosen = at_default_threads.get(chosen.batch_size) or (
        Point({}, chosen.rows_per_s) if chosen.rows_per_s else None
    )
    if chosen.batch_size != m.batch_size and base and base.rows_per_s and at_chosen and at_chosen.rows_per_s:
        gain = at_chosen.rows_per_s / base.rows_per_s - 1
        recs.append(
            Recommendation(
                "batch_size",
                f"use --batch-size {chosen.batch_size} ({_pct(gain)} end to end "
                f"over {m.batch_size:,}){model_note}",
                gain,
            )
        )
    else:
        recs.append(
            Recommendation(
                "batch_size",
                f"keep --batch-size {chosen.batch_size}: no other batch size "
                f"measured more than {NOISE:.0%} faster end to end{model_note}",
                0.0,
            )
        )


def _threads(
    recs: list[Recommendation],
    m: Measurements,
    v: Verdict,
    chosen: Settings,
    default: Point | None,
    at_default_threads: dict[Any, Point],
) -> None:
    """Threads."""
    if (chosen.threads, chosen.inter_op_threads) != (None, None) and default and default.rows_per_s:
        same_batch = at_default_threads.get(chosen.batch_size, default)
        gain = (chosen.rows_per_s or 0) / (same_batch.rows_per_s or 1) - 1
        recs.append(
            Recommendation(
                "threads",
                f"use {_threads_text(chosen.threads, chosen.inter_op_threads)} "
                f"({_pct(gain)} end to end over TensorFlow's default pools)",
                gain,
            )
        )
    else:
        best_t = _best(m.thread_sweep)
        note = ""
        if best_t is not None and best_t is not m.thread_sweep[0] and m.thread_sweep[0].rows_per_s:
            g = (best_t.rows_per_s or 0) / m.thread_sweep[0].rows_per_s - 1
            note = (
                f" (for the model alone "
                f"{_threads_text(best_t.settings['threads'], best_t.settings['inter_op_threads'])}"
                f" measured {_pct(g)}, which did not carry over to the whole job)"
            )
        recs.append(
            Recommendation(
                "threads", f"keep TensorFlow's default thread pools on these {m.cpus} cores{note}", 0.0
            )
        )


def _xla(
    recs: list[Recommendation],
    m: Measurements,
    v: Verdict,
    chosen: Settings,
    default: Point | None,
    at_default_threads: dict[Any, Point],
) -> None:
    """XLA."""
    xla = _xla_gain(m)
    if xla is None and len(m.xla_sweep) >= 2:
        recs.append(Recommendation("xla", f"XLA: {m.xla_sweep[1].note or 'not measured'}", None))
    elif xla is not None:
        if v.bottleneck == "model" and xla > 0.05:
            recs.append(
                Recommendation("xla", f"the model is the bottleneck: XLA gives {_pct(xla)} (add --xla)", xla)
            )
        elif xla > 0.05:
            recs.append(
                Recommendation(
                    "xla",
                    f"XLA makes the model {_pct(xla)} faster, but the model is not the "
                    "bottleneck: little gain end to end",
                    xla,
                )
            )
        else:
            recs.append(Recommendation("xla", f"XLA: no gain on this model ({_pct(xla)}); leave it off", xla))


def _input_format(
    recs: list[Recommendation],
    m: Measurements,
    v: Verdict,
    chosen: Settings,
    default: Point | None,
    at_default_threads: dict[Any, Point],
) -> None:
    """Input format."""
    reads = {
        p.settings["format"]: p.rows_per_s
        for p in m.format_sweep
        if p.settings.get("step") == "read" and p.rows_per_s
    }
    mine = reads.get(m.input_format)
    fastest = max(reads, key=lambda k: reads[k]) if reads else None
    names = {"csv": "CSV", "parquet": "Parquet", "jsonl": "JSON Lines", "tfrecord": "TFRecord"}
    if mine and fastest and fastest != m.input_format and reads[fastest] > 1.2 * mine:
        speed = reads[fastest] / mine
        e2e = next((p for p in m.format_sweep if p.settings.get("step") == "end_to_end"), None)
        end = ""
        fmt_gain: float | None = None
        if e2e is not None and e2e.rows_per_s and chosen.rows_per_s:
            fmt_gain = e2e.rows_per_s / chosen.rows_per_s - 1
            end = f"; end to end {_rate(e2e.rows_per_s)} ({_pct(fmt_gain)})"
        lead = "the input is the bottleneck: " if v.bottleneck == "input" else ""
        recs.append(
            Recommendation(
                "input_format",
                f"{lead}convert your {names.get(m.input_format, m.input_format)} to "
                f"{names.get(fastest, fastest)}: reading is {_times(speed)} faster "
                f"({_rate(reads[fastest])} vs "
                f"{_rate(mine)}){end}",
                fmt_gain,
            )
        )
    elif v.bottleneck == "input" and m.stages["convert"].rows_per_s < m.stages["read"].rows_per_s:
        recs.append(
            Recommendation(
                "input_format",
                f"feature conversion ({_rate(m.stages['convert'].rows_per_s)}) is the slow half of the "
                "input: string and multi-valued features cost most; Parquet with native list columns "
                "converts fastest",
            )
        )


def _output(
    recs: list[Recommendation],
    m: Measurements,
    v: Verdict,
    chosen: Settings,
    default: Point | None,
    at_default_threads: dict[Any, Point],
) -> None:
    """Output."""
    if v.bottleneck == "output":
        alt = "Parquet" if m.output_format != "parquet" else "fewer columns (--outputs)"
        recs.append(
            Recommendation(
                "output",
                f"writing {m.output_format} is the slowest stage "
                f"({_rate(m.stages['write'].rows_per_s)}): write {alt}",
            )
        )


def _per_row(
    recs: list[Recommendation],
    m: Measurements,
    v: Verdict,
    chosen: Settings,
    default: Point | None,
    at_default_threads: dict[Any, Point],
) -> None:
    """Per-row."""
    if m.per_row is not None and m.per_row.rows_per_s:
        batched = chosen.rows_per_s or m.stages["end_to_end"].rows_per_s
        factor = batched / m.per_row.rows_per_s
        recs.append(
            Recommendation(
                "per_row",
                "per-row prediction (the naive input_fn pattern) would run at "
                f"{_rate(m.per_row.rows_per_s)}: "
                f"you are {_times(factor)} faster batched",
                factor - 1,
            )
        )


def _model_ops(
    recs: list[Recommendation],
    m: Measurements,
    v: Verdict,
    chosen: Settings,
    default: Point | None,
    at_default_threads: dict[Any, Point],
) -> None:
    """Inside the model."""
    if m.op_categories:
        cat, share = next(iter(m.op_categories.items()))
        top = m.top_ops[0] if m.top_ops else None
        text = f"inside the model {share:.0%} of op time goes to {cat}"
        if top is not None:
            text += f" (top op: {top.name}, {top.op_type}, {top.share:.0%})"
        if cat == "string hashing / vocabulary":
            text += ": fewer/shorter string features or integer ids instead of strings would cut it"
        elif cat == "embeddings / one-hot":
            text += ": smaller embeddings or fewer categorical columns would cut it"
        recs.append(Recommendation("model_ops", text))
