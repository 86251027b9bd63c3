"""Valid stored run files built by hand (no training): the leaderboard and figure tests' input.

`synthetic_run(label, seed, R, ...)` returns a result dict whose recall accuracy matrix is R
(row 0 the base model), which `harness.store.validate` accepts and `Store.save_run` stores. They are
schema_version 1 files (no per-item records), which clbench still reads, unless `items` is given: then
each view of schema 2 holds `items` correct answers of which the first round(score * items) are right
(the same items at every stage, the budget drawing that many), and its score is their mean; a right answer's gold log-probability is
-0.5, a wrong one's -2.0.
synthetic_metrics: what the run claims to have measured beyond accuracy (see use_stored_metrics)."""
import numpy as np

from harness.spec.spec import RunSpec, content_hash

TASKS = ("stem", "humanities")
BUDGET = {"learn_items": 4, "transfer_items": 2, "general_items": 2, "epochs": 1}
CHECKSUMS = {"mmlu/test/a.csv": "0" * 64, "mbpp/mbpp.jsonl": "1" * 64}
PACKAGES = {"torch": "2.13.0+cpu", "transformers": "5.23.0", "peft": "0.21.2", "bitsandbytes": "0.50.2",
            "lm_eval": "0.4.13"}


def synthetic_run(label, seed, R, *, method="full", model="tiny", status="finished", trainable=10, total=100,
                  description="A method.", citation="Someone 2024", checksums=None, budget=None, general=0.5,
                  device="cpu", sweep="synthetic", synthetic_metrics=None, packages=None, items=None, method_config=None):
    spec = RunSpec(model=model, precision="fp32", device=device, stream=TASKS, probes=("general",), scorer="cloze",
                   budget=dict(budget or (BUDGET if not items else
                                          {**BUDGET, "learn_items": items, "transfer_items": items,
                                           "general_items": items})), data_seed=0, method=method, label=label,
                   method_config=dict(method_config or {}), seed=seed)
    checksums = dict(checksums or CHECKSUMS)
    stages = [{"stage": s, "trained_on": TASKS[s - 1] if s else None,
               "scores": {t: {"recall": {"score": R[s][i], "n": 10}, "transfer": {"score": R[s][i] / 2, "n": 10}}
                          for i, t in enumerate(TASKS)},
               "probes": {"general": {"heldout": {"score": general, "n": 10}}}, "seconds": 1.0}
              for s in range(len(R))]
    if items:
        for stage in stages:
            for views in [*stage["scores"].values(), *stage["probes"].values()]:
                for name, view in views.items():
                    right = round(view["score"] * items)
                    view.update(score=right / items, n=items, items={
                        "uid": [f"{name}/{k}" for k in range(items)], "correct": [int(k < right) for k in range(items)],
                        "gold_logprob": [-0.5 if k < right else -2.0 for k in range(items)],
                        "margin": [1.0 if k < right else -1.0 for k in range(items)]})
                    view["gold_logprob"] = sum(view["items"]["gold_logprob"]) / items
    return {"schema_version": 2 if items else 1, "run_id": spec.run_id, "sweep": sweep, "spec": spec.as_dict(),
            "status": status, "error": None if status == "finished" else "boom", "traceback": None,
            "stages": stages, "device": device, "precision": "fp32",
            "trainable_params": trainable, "total_params": total,
            "stage0_key": content_hash({"protocol": spec.protocol(), "precision": "fp32", "data": checksums}),
            "method_info": {"description": description, "citation": citation},
            "provenance": {"data_checksums": checksums, "machine": {"cpu": "Synthetic CPU", "device": device},
                           "packages": dict(packages or PACKAGES)},
            "synthetic_metrics": dict(synthetic_metrics or {})}


def use_stored_metrics(monkeypatch):
    """Make the leaderboard take a run's `synthetic_metrics` (GPU-hours, retention, ...) on top of
    run_metrics.run_row: what a synthetic run claims to have measured, whatever run_row computes."""
    from harness.report import leaderboard

    real = leaderboard.run_row

    def run_row(run):
        return {**real(run), **run.get("synthetic_metrics", {})}

    monkeypatch.setattr(leaderboard, "run_row", run_row)


def coin_flip_runs(label: str, method: str, seeds: int, p: float = 0.5, items: int = 200) -> list[dict]:
    """Runs whose final stem answers are each run's own coin flips (probability p), the same for every item, and
    whose other answers all agree: the items have no effect of their own, the runs only their own item noise."""
    rng = np.random.default_rng(sum(map(ord, label)))
    runs = []
    for s in range(seeds):
        run = synthetic_run(label, s, [[0.0, 0.0], [1.0, 0.0], [0.5, 1.0]], items=items, method=method)
        right = (rng.random(items) < p).astype(int)
        view = run["stages"][-1]["scores"]["stem"]["recall"]
        view["items"].update(correct=[int(x) for x in right], gold_logprob=[-0.5 if x else -2.0 for x in right],
                             margin=[1.0 if x else -1.0 for x in right])
        view.update(score=float(right.mean()), gold_logprob=float(np.mean(view["items"]["gold_logprob"])))
        runs.append(run)
    return runs
