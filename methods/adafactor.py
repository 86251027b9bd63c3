"""Adafactor as t5x runs it (google-research/t5x, t5x/adafactor.py), for prompt tuning's optimiser.

Lester et al.'s prompt tuning (google-research/prompt-tuning, configs/models/t5_1_1_prompt.gin and
configs/runs/prompt_finetune.gin) trains the prompt with t5x's Adafactor at a constant learning rate
0.3, decay_rate 0.8, step_offset 0, weight_decay_rate 1e-5 and `multiply_by_parameter_scale = False`:
"the provided learning_rate is absolute step size". torch.optim.Adafactor always multiplies the rate
by the parameter's RMS and by min(lr, 1/sqrt(t)) (the relative step), so at the paper's 0.3 it steps a
SmolLM2 embedding (RMS 0.14) by 0.04 where t5x steps it by 0.3 (0.14 of it), less and less after step 11.

Per parameter, at step t = 1, 2, ... (t5x's defaults where the gin does not set them: no momentum,
update clipping at 1.0, epsilon1 1e-30; factoring only where the two largest dimensions are both at
least 128, where the gin's logical_factor_rules never factor the prompt: the two agree for prompts
shorter than 128 tokens, so the default of 100 keeps a full second moment either way):

    beta = 1 - t^(-decay_rate);  v = beta * v + (1 - beta) * (g^2 + epsilon1)   (factored: row/col means)
    y = g / sqrt(v);  y /= max(1, RMS(y) / clipping_threshold)
    w = (1 - weight_decay_rate) * w - lr * y
"""
from __future__ import annotations

import torch


class Adafactor(torch.optim.Optimizer):
    def __init__(self, params, lr: float, decay_rate: float = 0.8, weight_decay_rate: float = 0.0,
                 clipping_threshold: float = 1.0, epsilon1: float = 1e-30, min_dim_size_to_factor: int = 128):
        super().__init__(params, dict(lr=lr, decay_rate=decay_rate, weight_decay_rate=weight_decay_rate,
                                      clipping_threshold=clipping_threshold, epsilon1=epsilon1,
                                      min_dim_size_to_factor=min_dim_size_to_factor))

    @staticmethod
    def _factored(shape, least: int) -> tuple[int, int] | None:
        """(row dim, col dim) to factor over: the second largest and the largest, when both are >= least."""
        if len(shape) < 2:
            return None
        order = sorted(range(len(shape)), key=lambda d: shape[d])
        return (order[-2], order[-1]) if shape[order[-2]] >= least else None

    @torch.no_grad()
    def step(self, closure=None):
        loss = torch.enable_grad()(closure)() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.float()
                state = self.state[p]
                dims = self._factored(g.shape, group["min_dim_size_to_factor"])
                if not state:
                    state["step"] = 0
                    if dims is None:
                        state["v"] = torch.zeros_like(g)
                    else:
                        state["v_row"] = torch.zeros_like(g.mean(dim=dims[1]))
                        state["v_col"] = torch.zeros_like(g.mean(dim=dims[0]))
                state["step"] += 1
                beta = 1.0 - state["step"] ** (-group["decay_rate"])
                sq = g * g + group["epsilon1"]
                if dims is None:
                    state["v"].mul_(beta).add_(sq, alpha=1.0 - beta)
                    y = g * state["v"].rsqrt()
                else:
                    row, col = dims
                    state["v_row"].mul_(beta).add_(sq.mean(dim=col), alpha=1.0 - beta)
                    state["v_col"].mul_(beta).add_(sq.mean(dim=row), alpha=1.0 - beta)
                    v_row, v_col = state["v_row"], state["v_col"]
                    row_factor = (v_row / v_row.mean(dim=row - (row > col), keepdim=True)).rsqrt()
                    y = g * row_factor.unsqueeze(col) * v_col.rsqrt().unsqueeze(row)
                y = y / max(1.0, (y.pow(2).mean().sqrt() / group["clipping_threshold"]).item())
                if group["weight_decay_rate"]:
                    p.mul_(1.0 - group["weight_decay_rate"])
                p.sub_((group["lr"] * y).to(p.dtype))
        return loss
