"""The child side of harness.spec.sandbox: `python -m harness.sandbox_child describe|train FD`, started confined by
the parent with one JSON request on stdin; it reports on file descriptor FD, one JSON object per line.

describe: import the method, run the interface and config checks (and the tiny-model trial when asked),
report what the method declares. train: load the run's data and model, then prepare and every stage as
a built-in runs them (harness.run.runner.prepare / train_stage), handing the model over after each and
waiting for the parent's {"go": stage} before the next.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys
import traceback
from pathlib import Path

MAX_CURVE = 20_000  # per-step losses a stage's record carries to the parent (about 0.4 MB of its 1 MB message)


def _describe(request: dict, send) -> None:
    from harness.core.typed import build
    from harness.submit import method_check

    target, overrides, source, root = request["target"], request["overrides"], request["source"], request["root"]
    cls, problems = method_check.static(target, overrides, source, root)
    if cls is not None and not problems and request["trial"]:
        problems += method_check.trial(cls, overrides, source, request["data_dir"], root)
    config = dataclasses.asdict(build(cls.Config, overrides, source, root)) if cls is not None and not problems else None
    needs = getattr(cls, "needs", None)
    send({"kind": "described", "problems": [str(p) for p in problems], "name": str(getattr(cls, "name", "")),
          "class": str(getattr(cls, "__name__", "")), "description": str(getattr(cls, "description", "")),
          "citation": str(getattr(cls, "citation", "")),
          "needs": dataclasses.asdict(needs) if dataclasses.is_dataclass(needs) else {},
          "config": config, "source_file": _source_file(cls)})


def _source_file(cls) -> str | None:
    try:
        return inspect.getsourcefile(cls)
    except TypeError:
        return None


def _train(request: dict, send, receive) -> None:
    from safetensors.torch import save_file

    from harness.core.typed import build
    from harness.run import compute, runner, sandboxed
    from harness.run.evaluation import evaluate
    from harness.spec.spec import RunSpec
    from methods.base import count_parameters
    from methods.registry import resolve_method

    spec = RunSpec.from_dict(request["spec"])
    setup = runner._Setup(spec, request["data_dir"], precision=request["precision"])
    method_cls = resolve_method(spec.method)
    method = method_cls(build(method_cls.Config, spec.method_config, "method_config"))
    send({"kind": "info", "description": str(method_cls.description), "citation": str(method_cls.citation)})
    shapes = sandboxed.shapes_of(setup.model)
    before = runner._function_outputs(setup.model, setup)
    scratch = Path.cwd()

    def hand_over(stage: int, model, **extra) -> None:
        state = sandboxed.standard_state(model, shapes)
        message = {"kind": "stage", "stage": stage, "peak_memory_mb": compute.peak_memory_mb(setup.device), **extra}
        if state is not None:
            save_file({k: v.detach().float().cpu().contiguous().clone() for k, v in state.items()},
                      str(scratch / "handover.safetensors"))
            message["weights"] = True
        else:  # scored here: the parent cannot load this model into the base architecture
            changed = stage > 0 or not runner._same_outputs(before, runner._function_outputs(model, setup))
            if changed:
                scores = evaluate(model, setup.tok, setup.tasks, setup.probes, desc=f"eval stage {stage}",
                                  **setup.eval_kw)
                (scratch / "scores.json").write_text(json.dumps(scores))
            keys = model.state_dict().keys() ^ shapes.keys()
            message.update(scores=changed, why="its model's weights differ in name or shape from the base "
                           f"architecture's ({len(keys)} names, e.g. {', '.join(sorted(keys)[:3])})")
        send(message)

    model = runner.prepare(spec, setup, method)
    trainable, total = count_parameters(model)
    hand_over(0, model, trainable_params=trainable, total_params=total)
    for stage in range(1, len(setup.tasks) + 1):
        if receive() != {"go": stage}:
            raise RuntimeError(f"expected the parent's go for stage {stage}")
        model, train, ctx = runner.train_stage(spec, setup, method, model, stage)
        if len(train.get("losses", ())) > MAX_CURVE:  # the curve is for the tracker: it must not overflow a message
            train.pop("losses")
        hand_over(stage, model, train=train, stats=method.stats(ctx) or {})


def main(argv: list[str]) -> int:
    command, fd = argv[1], int(argv[2])
    channel = os.fdopen(fd, "w", buffering=1)

    def send(message: dict) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    def receive() -> dict:
        return json.loads(sys.stdin.readline() or "null")

    try:
        request = receive()
        if command == "describe":
            _describe(request, send)
        else:
            _train(request, send, receive)
    except BaseException as e:  # noqa: BLE001 - an exit at import is reported too
        send({"kind": "error", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
