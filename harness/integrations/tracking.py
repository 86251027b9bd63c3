"""Experiment tracking, off by default: each run's per-stage metrics and training curve as TensorBoard event files.

`tracking: tensorboard` in a sweep config (`clbench run --set tracking=tensorboard`) makes every run write
`<results>/tracking/<label>-seed<seed>-<run_id>/` from the process that runs it (a Ray worker), all offline; view
them with `tensorboard --logdir <results>/tracking`. Why TensorBoard and not W&B or MLflow: docs/stack.md.
It needs the `tracking` extra (requirements/tracking.txt, pyproject's `clbench[tracking]`).

What a run logs (the x axis is the stage, 0 = the model before training, except under `curve/`):
  curve/train_loss                    the loss of every optimisation step, x = the step counted over the stream
  train/loss_first, loss_last, loss_mean_last_epoch, steps, tokens_per_second   each trained stage
  seconds/train, seconds/eval         the stage's training (the method's hooks included) and evaluation
  eval/<task>/<view>/<field>          every number of a task view: score, gold_logprob, reference_logprob, ...
  probe/<probe>/<view>/<field>        the same for each probe (stop_rate, mean_logprob, ...)
  text `run`                          run id, label, method, seed, sweep, protocol, model, stream, method config

The run file in <results>/runs/ stays the record: the tracker only copies what the runner stored, after it
stored it, and any failure of the tracker (the package missing, a full disk, a bad value) is a warning that
turns tracking off for the rest of that run, never an error of the run. A run that starts afresh replaces
its folder; a resumed one appends to it from its first new stage.
"""
from __future__ import annotations

import functools
import math
import re
import shutil
import warnings
from pathlib import Path

BACKENDS = ("none", "tensorboard")
FOLDER = "tracking"  # under the results folder


def available() -> bool:
    """The tracking extra is installed (the writer comes with torch; it needs the tensorboard package)."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def run_name(spec) -> str:
    """`<label>-seed<seed>-<run_id>`: the run's name in TensorBoard, a folder name whatever the label holds."""
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", spec.label).strip("._") or "run"
    return f"{label}-seed{spec.seed}-{spec.run_id}"


def folder(root, spec) -> Path:
    return Path(root) / FOLDER / run_name(spec)


def _numbers(record: dict) -> dict[str, float]:
    """The finite real numbers of a view's record (its counts and per-item lists left out)."""
    return {k: float(v) for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k not in ("n", "max_new_tokens") and math.isfinite(v)}


def _guarded(method):
    """A tracker call whose failure warns once and turns the tracker off: the run goes on untouched."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        if self.writer is None and method.__name__ != "begin":
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 - whatever the backend raises, the run must not fail for it
            warnings.warn(f"tracking off for {self.name}: {method.__name__} failed with {type(e).__name__}: {e}; "
                          "the run goes on and its results are stored as without tracking", stacklevel=2)
            self._drop()
            return None
    return call


class Off:
    """No tracking (the default): every call does nothing."""

    def begin(self, stages: list[dict]) -> None:
        pass

    def stage(self, record: dict, curve=None) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoard:
    """One run's TensorBoard log. Created in the process that runs the run; nothing is opened before `begin`."""

    def __init__(self, root, spec, sweep: str = "", protocol: dict | None = None):
        self.path, self.name, self.writer, self.step = folder(root, spec), run_name(spec), None, 0
        self.tags = {"run_id": spec.run_id, "label": spec.label, "method": spec.method, "seed": spec.seed,
                     "sweep": sweep, "protocol": f"{protocol['name']} {protocol['version']}" if protocol else "",
                     "model": spec.model, "stream": " → ".join(spec.stream), "method_config": spec.method_config}

    @_guarded
    def begin(self, stages: list[dict]) -> None:
        """Open the log with the stages the run starts from: stage 0 alone (a fresh start: the folder's earlier
        files, of an attempt whose stored run this one replaces, are removed and stage 0 is logged), or the stages
        a resumed run keeps (already logged by its earlier attempt; the curve goes on after their steps)."""
        from torch.utils.tensorboard import SummaryWriter

        fresh = len(stages) == 1
        if fresh and self.path.exists():
            shutil.rmtree(self.path)
        self.step = sum(int((s.get("train") or {}).get("steps", 0)) for s in stages[1:])
        self.writer = SummaryWriter(log_dir=str(self.path), flush_secs=30)
        table = "\n".join(f"| {k} | {v} |" for k, v in self.tags.items())
        self.writer.add_text("run", "| tag | value |\n|---|---|\n" + table, global_step=len(stages) - 1)
        if fresh:
            self._stage(stages[0], None)
        self.writer.flush()

    @_guarded
    def stage(self, record: dict, curve=None) -> None:
        """A stored stage record (runner: result["stages"][k]) and the per-step losses of its training."""
        self._stage(record, curve)
        self.writer.flush()

    def _stage(self, record: dict, curve) -> None:
        k, add = int(record["stage"]), self.writer.add_scalar
        for loss in curve or ():
            self.step += 1
            if isinstance(loss, (int, float)) and not isinstance(loss, bool) and math.isfinite(loss):
                add("curve/train_loss", float(loss), self.step)
        for key, value in _numbers(record.get("train") or {}).items():
            if key == "seconds":
                add("seconds/train", value, k)
            elif key in ("loss_first", "loss_last", "loss_mean_last_epoch", "steps", "tokens_per_second"):
                add(f"train/{key}", value, k)
        if isinstance(record.get("seconds"), (int, float)):
            add("seconds/eval", float(record["seconds"]), k)
        for group, prefix in (("scores", "eval"), ("probes", "probe")):
            for task, views in (record.get(group) or {}).items():
                for view, values in views.items():
                    for key, value in _numbers(values).items():
                        add(f"{prefix}/{task}/{view}/{key}", value, k)

    @_guarded
    def close(self) -> None:
        self.writer.close()
        self.writer = None

    def _drop(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - already warned; nothing more to do for a broken writer
                pass


def tracker(kind: str, root, spec, sweep: str = "", protocol: dict | None = None):
    """The run's tracker: Off for 'none', else the backend's (which opens nothing until `begin`)."""
    if kind == "none":
        return Off()
    if kind == "tensorboard":
        return TensorBoard(root, spec, sweep, protocol)
    raise ValueError(f"unknown tracking backend {kind!r}; one of {', '.join(BACKENDS)}")
