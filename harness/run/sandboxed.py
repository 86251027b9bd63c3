"""A run of a method clbench did not write (harness.spec.sandbox): its child trains, the model comes back as weights.

`SandboxedTrainer`: a child loads the data and the model and runs the method's hooks and training stage by stage
(harness.run.runner.prepare / train_stage, as for a built-in). After `prepare` and after each stage it hands the model
over as a safetensors file of the base architecture's state dict (a peft model's adapters merged first: plain
tensors, no code; `standard_state`). The parent, which never imported the method, checks the file
(`load_handover`: a regular file of bounded size; the base model's keys, shapes, floating dtypes), loads it into
its own copy of the base model and scores that. A model the base architecture cannot express (modules of its own)
is scored by the child instead, and the run is marked unverified.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from ..core.json_file import Refused, read_regular
from ..spec.sandbox import STAGE_TIMEOUT, Child, SandboxError, _json_value, _text, absolute


def standard_state(model, shapes: dict) -> dict | None:
    """The model as a state dict of the base architecture (keys -> shapes `shapes`): its own, or, for a peft
    model, that of a copy with the adapters merged; None when it cannot be expressed so."""
    import copy

    state = model.state_dict()
    if _matches(state, shapes):
        return state
    if hasattr(model, "merge_and_unload"):
        merged = copy.deepcopy(model).merge_and_unload().state_dict()
        if _matches(merged, shapes):
            return merged
    return None


def _matches(state: dict, shapes: dict) -> bool:
    return state.keys() == shapes.keys() and all(tuple(v.shape) == shapes[k] for k, v in state.items())


def shapes_of(model) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_handover(path: Path, model) -> None:
    """Load a child's safetensors file into `model` (the base architecture) after checking it: a regular file
    no larger than the model's own weights in fp32 (plus 1 MB), the same keys and shapes, floating tensors."""
    import torch
    from safetensors.torch import load

    expected = model.state_dict()
    limit = sum(t.numel() * 4 for t in expected.values()) + (1 << 20)
    try:  # copied, not mapped: the child is still alive and could truncate a mapped file under the reader
        data = read_regular(path, limit, follow=False)
    except (OSError, Refused):
        raise SandboxError(f"handed over {path.name}, which is not a regular file of at most {limit} bytes") from None
    try:
        state = load(data)
    except Exception as e:  # a malformed header or body
        raise SandboxError(f"handed over an unreadable safetensors file: {type(e).__name__}: {e}") from None
    if state.keys() != expected.keys():
        raise SandboxError(f"handed over weights whose names differ from the base model's "
                           f"({len(state.keys() ^ expected.keys())} differ)")
    for k, t in state.items():
        if tuple(t.shape) != tuple(expected[k].shape) or not t.is_floating_point() or not torch.isfinite(t).all():
            raise SandboxError(f"handed over '{k}' of shape {tuple(t.shape)} and dtype {t.dtype}, or with NaN/inf; "
                               f"the base model's is {tuple(expected[k].shape)}, floating")
    model.load_state_dict(state, strict=True)


class SandboxedTrainer:
    """The parent side of a run of an untrusted method: start the child, then, per stage, let it train and take
    over what it hands back. `prepare()` and `stage(s)` return (model or None, the child's own scores or None);
    the model is the parent's base model with the handed-over weights, None when the run is unverified."""

    resumable = False  # the child's state is not checkpointed: an interrupted run starts afresh

    def __init__(self, spec, setup, data_dir, timeout: float | None = None):
        self.setup, self.spec = setup, spec
        self.timeout = timeout or STAGE_TIMEOUT  # seconds for prepare and for each stage (resources.stage_hours)
        self._tmp = tempfile.TemporaryDirectory(prefix="clbench-run-", ignore_cleanup_errors=True)
        self.scratch = Path(self._tmp.name)
        request = {"spec": {**spec.as_dict(), "method": absolute(spec.method)}, "data_dir": data_dir,
                   "precision": setup.precision}
        try:
            self.child = Child("train", request, self.scratch)
            m = self.child.receive(self.timeout)
        except BaseException:
            self.close()
            raise
        self.info = {"description": _text(m.get("description", "")), "citation": _text(m.get("citation", ""))}
        self.verified, self.unverified_reason, self.peak_memory_mb = True, None, None
        self.weights = None  # the child's storage dtypes are not reported

    def _counts(self, m: dict) -> None:
        t, n = m.get("trainable_params"), m.get("total_params")
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in (t, n)) or t > n or not t:
            raise SandboxError(f"reported parameter counts {t!r} of {n!r}")
        self.counts = (t, n)

    def _take(self, m: dict, stage: int):
        """(model or None, the child's scores or None) from a handover message."""
        if m.get("kind") != "stage" or m.get("stage") != stage:
            raise SandboxError(f"sent {m.get('kind')!r} for stage {m.get('stage')!r}, expected stage {stage}")
        peak = m.get("peak_memory_mb")  # on a GPU: the child's word (its CUDA allocator's peak)
        if self.setup.device != "cuda":  # on a CPU: the child's peak resident memory, read by the kernel's count
            peak = self.child.peak_rss_mb()
        self.peak_memory_mb = float(peak) if isinstance(peak, (int, float)) and 0 < peak < 2**40 else None
        if m.get("weights"):
            path = self.scratch / "handover.safetensors"
            load_handover(path, self.setup.model)
            path.unlink()
            return self.setup.model, None
        if self.verified:
            self.verified = False
            self.unverified_reason = _text(m.get("why", "its model has modules the base architecture lacks"))
        scores = None
        if m.get("scores"):
            from ..core.json_file import read_json
            from ..store.validate import items_problem, view_cap

            scores, why = read_json(self.scratch / "scores.json")
            if why or not isinstance(scores, dict) or not isinstance(scores.get("seconds"), (int, float)):
                raise SandboxError(f"handed over scores that cannot be read: {why or 'not an object with seconds'}")
            if problem := items_problem(scores, f"stage {stage} scores", view_cap(self.spec)):
                raise SandboxError(f"handed over malformed scores: {problem}")
        return None, scores

    def prepare(self):
        m = self.child.receive(self.timeout)
        self._counts(m)
        return self._take(m, 0)

    def stage(self, stage: int):
        """(model or None, training record, method stats, the child's scores or None) after stage `stage`."""
        self.child.send({"go": stage})
        m = self.child.receive(self.timeout)
        model, scores = self._take(m, stage)
        train, stats = m.get("train"), m.get("stats") or {}
        if not (isinstance(train, dict) and _json_value(train)
                and all(isinstance(train.get(k), (int, float)) and not isinstance(train.get(k), bool)
                        and train[k] >= 0 for k in ("tokens", "steps", "seconds"))):
            raise SandboxError(f"reported a malformed training record for stage {stage}")
        if not (isinstance(stats, dict) and _json_value(stats)):
            raise SandboxError(f"reported method stats that are not plain JSON for stage {stage}")
        return model, train, stats, scores

    def close(self) -> None:
        if getattr(self, "child", None):
            self.child.close()
        self._tmp.cleanup()
