"""The outcome of one pipeline run and its two renderings.

``render_text`` is what ``orchestrate.py`` prints at the end. ``render_markdown``
is published as the Prefect artifact ``pipeline-summary`` and logged to the
parent MLflow run as ``pipeline_summary.md``. Both mask any password in the
tracking URI.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestration.launch import StepResult
from orchestration.source import mask_url
from orchestration.tracking import ui_hint

SUMMARY_ARTIFACT_KEY = "pipeline-summary"
SUMMARY_FILE = "pipeline_summary.md"

# The metrics a user looks at first, in this order. The parent run records all of them.
HEADLINE_METRICS = (
    "accuracy",
    "f1_score",
    "precision_score",
    "recall_score",
    "cv_accuracy_mean",
    "cv_accuracy_std",
    "train_accuracy",
)


@dataclass(frozen=True)
class PipelineResult:
    """One pipeline run: its parent MLflow run, each step and the final outputs."""

    status: str
    parent_run_id: str
    experiment_name: str
    tracking_uri: str
    steps: list[StepResult]
    metrics: dict[str, float] = field(default_factory=dict)
    data_uri: str | None = None
    model_uri: str | None = None
    error: str | None = None
    flow_run_name: str | None = None

    @property
    def headline_metrics(self) -> dict[str, float]:
        return {key: self.metrics[key] for key in HEADLINE_METRICS if key in self.metrics}


def render_text(result: PipelineResult) -> str:
    lines = [f"Pipeline {result.status}" + (f": {result.error}" if result.error else "")]
    lines.append("")
    lines.append(f"  {'step':<9} {'status':<9} {'duration':>9}  MLflow run")
    for step in result.steps:
        lines.append(
            f"  {step.step:<9} {_status(step):<9} {_duration(step.duration_s):>9}  "
            f"{step.run_id or '-'}"
        )
    lines.append("")
    if result.headline_metrics:
        metrics = ", ".join(f"{key} {value:.4f}" for key, value in result.headline_metrics.items())
        lines.append(f"Metrics:    {metrics}")
    lines.append(f"Model:      {result.model_uri or '-'}")
    lines.append(
        f"Parent run: {result.parent_run_id} in experiment {result.experiment_name!r}"
        + (f" (Prefect flow run {result.flow_run_name})" if result.flow_run_name else "")
    )
    lines.append(f"MLflow UI:  {ui_hint(result.tracking_uri)}")
    return "\n".join(lines)


def render_markdown(result: PipelineResult) -> str:
    lines = [f"# Training pipeline {result.status}", ""]
    if result.error:
        lines += [f"**Error:** {_cell(result.error)}", ""]
    lines += ["| Step | Status | Duration | MLflow run |", "|---|---|---|---|"]
    for step in result.steps:
        lines.append(
            f"| {step.step} | {_status(step)} | {_duration(step.duration_s)} | "
            f"`{step.run_id or '-'}` |"
        )
    if result.headline_metrics:
        lines += ["", "| Metric | Value |", "|---|---|"]
        lines += [f"| {key} | {value:.4f} |" for key, value in result.headline_metrics.items()]
    lines += [
        "",
        f"- Model: `{result.model_uri or '-'}`",
        f"- Data: `{result.data_uri or '-'}`",
        f"- Parent run: `{result.parent_run_id}` in experiment `{result.experiment_name}`",
        f"- Tracking URI: `{mask_url(result.tracking_uri)}`",
        f"- MLflow UI: `{ui_hint(result.tracking_uri)}`",
    ]
    return "\n".join(lines) + "\n"


def _status(step: StepResult) -> str:
    # A cached step shows the run it reused, with that run's duration.
    return "cached" if step.cached else step.status


def _duration(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f} s"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
