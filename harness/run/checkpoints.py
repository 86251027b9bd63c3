"""Per-stage checkpoints of a run's trained state, so an interrupted run resumes where it stopped.

What is saved is every parameter with requires_grad after `method.prepare` (the adapter for
LoRA, all weights for full fine-tuning): frozen parameters equal the base model's by the
method contract, and `prepare` rebuilds the structure; beside them, what the method keeps outside them
(`Method.state`: its tensors under `method/`, its plain JSON in the file's metadata). Only the latest
recorded stage of each run is kept, in safetensors (never pickle), under <results>/checkpoints/<run_id>/, and the
folder is removed when the run finishes, so the disk holds about one checkpoint per unfinished run; past
$CLBENCH_CHECKPOINT_CAP_GB (default 20) a checkpoint is skipped with a warning, never a failure.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


CAP_ENV = "CLBENCH_CHECKPOINT_CAP_GB"
METHOD = "method/"  # the prefix of the method's own tensors in a checkpoint
# bytes of a method's JSON state in a checkpoint's header: safetensors reads no header over 100 MB
METADATA_CAP = 64 * 2**20


class Checkpoints:
    def __init__(self, results_root, cap_gb: float | None = None):
        self.root = Path(results_root) / "checkpoints"
        self.cap_bytes = (cap_gb if cap_gb is not None else float(os.environ.get(CAP_ENV, "20"))) * 2**30

    def _used(self) -> int:
        return sum(p.stat().st_size for p in self.root.glob("*/*.safetensors"))

    def _path(self, run_id: str, stage: int) -> Path:
        return self.root / run_id / f"stage{stage}.safetensors"

    def save(self, run_id: str, stage: int, model, method_state: tuple[dict, dict] = ({}, {})) -> Path | None:
        """Write the stage's checkpoint: the trainable parameters and the method's (tensors, JSON) state; None
        (and a warning) when it would pass the size cap."""
        state = {n: p.detach().to("cpu").clone().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        tensors, info = method_state
        state.update({METHOD + n: t.detach().to("cpu").clone().contiguous() for n, t in tensors.items()})
        metadata = {"method_state": json.dumps(info)} if info else None
        extra = len(metadata["method_state"]) if metadata else 0
        if extra > METADATA_CAP:
            warnings.warn(f"checkpoint of {run_id} stage {stage} skipped: the method's state is {extra / 2**20:.0f} MB "
                          f"of JSON, more than a checkpoint's header holds ({METADATA_CAP / 2**20:.0f} MB); this run "
                          "cannot resume from that stage")
            return None
        size = sum(t.numel() * t.element_size() for t in state.values()) + extra
        if self._used() + size > self.cap_bytes:
            warnings.warn(f"checkpoint of {run_id} stage {stage} skipped: {self.root} would pass the "
                          f"{self.cap_bytes / 2**30:g} GB cap (${CAP_ENV}); this run cannot resume from that stage")
            return None
        path = self._path(run_id, stage)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file(state, tmp, metadata=metadata)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return path

    def prune(self, run_id: str, keep: int) -> None:
        """Drop every stage but `keep`; called once the run file records stage `keep`, so that a
        crash at any point leaves a checkpoint matching a stage the run file has."""
        for old in (self.root / run_id).glob("stage*.safetensors"):
            if old != self._path(run_id, keep):
                old.unlink()

    def has(self, run_id: str, stage: int) -> bool:
        """Whether a checkpoint of that stage is there and its header reads: a damaged one is not resumed from (the
        run failed after its stage 0, naming neither the file nor the fix), with a warning; the run starts again
        from an earlier one or afresh."""
        path = self._path(run_id, stage)
        if not path.exists():
            return False
        try:
            with safe_open(str(path), "pt") as f:
                f.keys()
                json.loads((f.metadata() or {}).get("method_state", "{}"))
            return True
        except Exception as e:  # a truncated or overwritten file: whatever safetensors raises
            warnings.warn(f"{path}: not a readable checkpoint ({type(e).__name__}); {run_id} does not resume from "
                          f"stage {stage}")
            return False

    def load_method_state(self, run_id: str, stage: int, trainer, model) -> None:
        """Hand the method's (tensors, JSON) state the stage's checkpoint holds to `trainer.load_state`
        (`Method.state`); a state the method cannot take back (a checkpoint of other code, or altered) fails the run
        naming the file and the fix."""
        path = self._path(run_id, stage)
        with safe_open(str(path), "pt") as f:
            info = json.loads((f.metadata() or {}).get("method_state", "{}"))
            tensors = {k[len(METHOD):]: f.get_tensor(k) for k in f.keys() if k.startswith(METHOD)}
        try:
            trainer.load_state(model, tensors, info)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
            raise RuntimeError(f"{path}: the method cannot take back the state this checkpoint holds "
                               f"({type(e).__name__}: {e}); delete {path.parent} to run {run_id} afresh") from e

    def restore(self, run_id: str, stage: int, model) -> None:
        """Copy the checkpoint's trainable parameters into the model (whose method state is back already)."""
        state = {k: v for k, v in load_file(str(self._path(run_id, stage))).items() if not k.startswith(METHOD)}
        params = dict(model.named_parameters())
        missing = set(state) ^ {n for n, p in params.items() if p.requires_grad}
        if missing:
            raise RuntimeError(f"checkpoint {self._path(run_id, stage)} does not match the model: {sorted(missing)[:5]}")
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value.to(params[name].device))

    def remove(self, run_id: str) -> None:
        shutil.rmtree(self.root / run_id, ignore_errors=True)
