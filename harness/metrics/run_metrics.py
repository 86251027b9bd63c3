"""The numbers one stored run contributes to the leaderboard and the figures.

`run_row(run)` is the single place where a run file's stages become headline metrics; the
leaderboard aggregates these over seeds. Keys (None where the run did not measure it):
    headline, lp_gain, instruct_change          the ranking score and its two terms (harness.metrics.metrics.headline)
    overall, bwt, fwt, plasticity, forgetting   accuracy matrix on recall views (harness.metrics.metrics)
    lp_bwt, lp_plasticity, lp_forgetting         the same on the log-probability matrix L (recall views' gold
                                                 answers, nats per token; harness.metrics.metrics.logprob_matrix)
    transfer                                     overall performance on held-out transfer items
    general                                      final score of the `general` MC probe
    general_retention                            mean over the accuracy probes (`general`, `lm_eval:<task>`) of
                                                 final accuracy / baseline accuracy, the baseline being stage 0:
                                                 the method's prepared model. `instruct` (a log-probability) is
                                                 not mixed in: it is reported as instruct_change
    general_retention_base                       the same against the unprepared base model (differs only
                                                 where `prepare` changed the model's function)
    stop_rate_change                             final stop rate minus stage 0's, the prepared model's (`stop` probe)
    tail_repetition                              final tail-repetition share (`stop` probe)
    gpu_hours, cpu_hours                         device time of the trained stages (harness.run.compute)
    train_tflops                                 estimated training FLOPs / 1e12: trained tokens x (4 N + 2 N_t),
                                                 N all parameters, N_t trainable ones (forward 2N, backward
                                                 through the activations 2N, weight gradients 2 N_t); a method's
                                                 extra forwards (a teacher, a Fisher pass) are not counted
    trainable_share                              trainable / total parameters
"""
from __future__ import annotations

from . import metrics

KEYS = ("headline", "lp_gain", "instruct_change", "overall", "bwt", "fwt", "plasticity", "lp_bwt", "lp_plasticity",
        "lp_forgetting", "transfer", "general", "general_retention", "general_retention_base", "stop_rate_change", "tail_repetition", "gpu_hours", "cpu_hours", "train_tflops", "trainable_share")


def probe_score(views: dict) -> float | None:
    """A probe's score: the mean `score` of its views (None for a probe without one, like `stop`)."""
    scores = [v["score"] for v in views.values() if isinstance(v, dict) and v.get("score") is not None]
    return sum(scores) / len(scores) if scores else None


NOT_ACCURACY = ("instruct", "stop")  # probes whose score is no accuracy: never averaged with the accuracy ratios


def retention(base: dict, stage: dict) -> dict:
    """{probe: accuracy after `stage` / base accuracy} for each accuracy probe of both stage records;
    None where the base accuracy is 0 (no ratio exists)."""
    out = {}
    for name, views in stage["probes"].items():
        if name in NOT_ACCURACY:
            continue
        before, after = probe_score(base["probes"].get(name, {})), probe_score(views)
        if before is not None and after is not None:
            out[name] = after / before if before else None
    return out


def run_row(run: dict) -> dict:
    """Metrics of one finished run."""
    tasks = list(run["spec"]["stream"])
    stages = run["stages"]
    row = dict.fromkeys(KEYS)
    row.update(metrics.summary(stages, tasks, "recall"))
    L = metrics.logprob_matrix(stages, tasks, "recall")
    if L is not None:
        row.update(metrics.logprob_summary(L))
        row["lp_task_forgetting"] = dict(zip(tasks, metrics.forgetting(L)))  # every task but the last
        # the headline starts from the unprepared base model: a method gains nothing by repairing what its
        # own initialisation did (P-tuning v2's random prefix halves the instruct probe's probability)
        base = [run.get("base_model") or stages[0], *stages[1:]]
        instruct = [st["probes"].get("instruct", {}).get("reference", {}).get("mean_logprob") for st in base]
        row.update(metrics.headline(metrics.logprob_matrix(base, tasks, "recall"),
                                    None if None in instruct else instruct))
    row["transfer"] = metrics.overall(metrics.matrix(stages, tasks, "transfer"))
    probes = stages[-1]["probes"]
    row["general"] = probes["general"]["heldout"]["score"] if "general" in probes else None
    for key, baseline in (("general_retention", stages[0]),
                          ("general_retention_base", run.get("base_model") or stages[0])):
        kept = [r for r in retention(baseline, stages[-1]).values() if r is not None]
        row[key] = sum(kept) / len(kept) if kept else None
    if "stop" in probes and "stop" in stages[0]["probes"]:
        base_stop, final_stop = stages[0]["probes"]["stop"]["prompts"], probes["stop"]["prompts"]
        row["stop_rate_change"] = final_stop["stop_rate"] - base_stop["stop_rate"]
        row["tail_repetition"] = final_stop["tail_repetition"]
    row["gpu_hours"] = run.get("compute", {}).get("gpu_hours")
    row["cpu_hours"] = run.get("compute", {}).get("cpu_hours")
    if run.get("total_params"):
        row["trainable_share"] = run.get("trainable_params", 0) / run["total_params"]
        tokens = run.get("compute", {}).get("train_tokens")
        if tokens:
            row["train_tflops"] = tokens * (4 * run["total_params"] + 2 * run.get("trainable_params", 0)) / 1e12
    return row
