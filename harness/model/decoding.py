"""Greedy decoding after a batch's prompts: one token per row and step, every step the same shapes.

After the prompts' prefill (`scoring._prompt_batches`) each layer's keys and values move into tensors as wide as
the replies can grow (`_FixedLayer`); a step then runs the rows' new tokens at their positions against an
attention mask as wide as the cache (True on each row's real prompt tokens and on the reply so far), and the
step itself advances the write index, the mask's new column and the positions, all held on the device. Nothing in
a step reads a value back to the host or depends on Python state that changes between steps, so on CUDA the step
after the first is captured as a CUDA graph and replayed (`_FixedStep`): an eager step launches about 1,370
kernels for SmolLM2-135M, which on an H200 cost the host 20-77 ms against 2.6-3 ms of GPU work
(docs/performance.md, "On a GPU"). A replay runs the captured kernels, the same ones the eager step runs. On a CPU
every step runs eagerly. tests/test_decoding.py records the step on a CPU the way a capture does (its Python runs
once, then only its recorded operations run) and checks the replayed tokens.

A cache with layers of another kind (a sliding window, a quantized cache) decodes with a mask that grows by a
column per step, eagerly (`_GrowingStep`): a fixed width would hand a window layer keys outside its window.
"""
from __future__ import annotations

import contextlib
import inspect
import sys

import torch
from transformers import LlamaForCausalLM
from transformers.cache_utils import DynamicLayer

# transformers 5.24 renamed the forward's KV-cache keyword and output field `past_key_values` to `cache`
# (the old name warns and goes in 5.40); the scorers pass and read whichever the installed version has.
CACHE_ARG = "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


def returned_cache(out):
    return getattr(out, CACHE_ARG)


class _FixedLayer(DynamicLayer):
    """A KV-cache layer as wide as the tokens still to come allow: the filled part is the given layer's, the rest
    zeros (a masked position's weight is exactly 0, and 0 x a zero value adds nothing, where uninitialised memory
    could hold a NaN). Each update writes at a position counted on the device and hands out the whole width.
    New states are stored in the dtype of the layer's, as transformers' layer keeps them: under bf16 autocast its
    keys are fp32 (rotary embeddings in fp32), its values start from an empty tensor of the keys' dtype, and each
    concatenation promotes a step's bf16 values to fp32 (exactly)."""

    def __init__(self, layer: DynamicLayer, room: int):
        super().__init__()
        self.dtype, self.device, self.is_initialized = layer.dtype, layer.device, True
        self.keys, self.values = (torch.cat([t, t.new_zeros(*t.shape[:-2], room, t.shape[-1])], dim=-2)
                                  for t in (layer.keys, layer.values))
        self.filled = torch.tensor(layer.keys.shape[-2], device=self.device)

    def update(self, key_states, value_states, *args, **kwargs):
        at = self.filled + torch.arange(key_states.shape[-2], device=self.device)
        self.keys.index_copy_(-2, at, key_states.to(self.keys.dtype))
        self.values.index_copy_(-2, at, value_states.to(self.values.dtype))
        self.filled.add_(key_states.shape[-2])
        return self.keys, self.values


def _fixable(model, cache) -> bool:
    """Whether the step can run at a fixed width: every cache layer a plain one, and attention through SDPA, which
    reads a boolean mask as one (eager attention adds a given mask to the scores, expecting 0 and -inf)."""
    return getattr(getattr(model, "config", None), "_attn_implementation", None) == "sdpa" and \
        all(type(layer) is DynamicLayer and layer.is_initialized for layer in cache.layers)


class _FixedStep:
    """One decoding step on fixed-width buffers (see the module's docstring). `record(step)`, if given, records the
    step after its first, eager run and returns (replay, out): a callable that runs the recorded step again and
    the tensor it leaves the next tokens in (`cuda_graph` on CUDA); if it raises, the steps go on eagerly."""

    def __init__(self, model, cache, mask: torch.Tensor, room: int, record=None):
        cache.layers = [_FixedLayer(layer, room) for layer in cache.layers]
        rows, filled = mask.shape
        self.model, self.cache, self.record = model, cache, record
        self.mask = torch.zeros(rows, 1, 1, filled + room, dtype=torch.bool, device=mask.device)
        self.mask[:, 0, 0, :filled] = mask.bool()
        self.column = torch.tensor([filled], device=mask.device)  # the new token's column of the cache
        self.position = mask.sum(1, keepdim=True)  # each row's next position: cache and real prompt tokens before it
        self.token = torch.zeros(rows, 1, dtype=torch.long, device=mask.device)
        self.replay = self.out = None

    def forward(self) -> torch.Tensor:
        self.mask.index_fill_(-1, self.column, True)
        logits = self.model(input_ids=self.token, attention_mask=self.mask, position_ids=self.position,
                            **{CACHE_ARG: self.cache}, use_cache=True).logits
        self.column.add_(1)
        self.position.add_(1)
        return logits[:, -1].argmax(-1)

    def __call__(self, token: torch.Tensor) -> torch.Tensor:
        self.token.copy_(token.unsqueeze(1))
        if self.replay is not None:
            self.replay()
            COUNTS["replayed"] += 1
            return self.out  # overwritten by the next replay: the caller reads it before the next step
        out = self.forward()
        if self.record is not None:
            record, self.record = self.record, None
            try:
                self.replay, self.out = record(self)
                COUNTS["recorded"] += 1
            except Exception as e:  # noqa: BLE001 - the step that ran eagerly goes on so
                cause = f"; after {_line(e.__context__)}" if e.__context__ is not None else ""
                print(f"clbench: decoding steps run eagerly, the step could not be recorded ({_line(e)}{cause})",
                      file=sys.stderr)
        return out


def _line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"


_CAPTURE = {"stream": None, "failed": False}  # this process's capture stream; whether ending a capture failed
# steps recorded (one per batch whose recording worked) and replayed in this process: a recording that fails leaves
# the steps eager with the same tokens, so only these tell a GPU check whether its graphs ran at all
COUNTS = {"recorded": 0, "replayed": 0}


def cuda_graph(step: _FixedStep):
    """(replay, out) of the step captured as a CUDA graph. Capturing runs no kernel, so the step's buffers stay as
    its eager run left them. While capturing, a read back to the host (a forward that calls .item(), say) raises
    in Python before CUDA sees it (sync debug mode "error"), so the capture still ends cleanly and is dropped.
    Should ending a capture fail anyway, its state is not to be trusted: nothing is captured again in this
    process. Autocast's cache of cast weights is off while capturing (its casts would not outlive the capture)."""
    graph, mode = torch.cuda.CUDAGraph(), torch.cuda.get_sync_debug_mode()
    with torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"), enabled=torch.is_autocast_enabled("cuda"),
                        cache_enabled=False):
        graph.capture_begin()
        try:
            torch.cuda.set_sync_debug_mode("error")
            out = step.forward()
        finally:
            torch.cuda.set_sync_debug_mode(mode)
            try:
                graph.capture_end()
            except Exception:
                _CAPTURE["failed"] = True
                raise
    return graph.replay, out


def _recorder(device: torch.device, capture: bool):
    return cuda_graph if capture and device.type == "cuda" and not _CAPTURE["failed"] else None


def _capture_stream(device: torch.device):
    """The stream a batch whose steps are captured decodes on: one of this process's own, for the eager first step,
    the capture and the replays alike. The eager step is the capture's warm-up there: cuBLAS makes its workspace
    for that stream outside any graph's memory, where every later capture finds it (a workspace made while
    capturing would belong to a graph that a later batch has freed)."""
    _CAPTURE["stream"] = _CAPTURE["stream"] or torch.cuda.Stream(device)
    return _CAPTURE["stream"]


class _GrowingStep:
    """One eager decoding step on the cache as transformers grows it, the mask a column wider each step."""

    def __init__(self, model, cache, mask: torch.Tensor):
        self.model, self.cache, self.mask = model, cache, mask
        self.position = mask.sum(1, keepdim=True)

    def __call__(self, token: torch.Tensor) -> torch.Tensor:
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        out = self.model(input_ids=token.unsqueeze(1), attention_mask=self.mask, position_ids=self.position,
                         **{CACHE_ARG: self.cache}, use_cache=True)
        self.cache, self.position = returned_cache(out), self.position + 1
        return out.logits[:, -1].argmax(-1)


def greedy_rows(model, logits, cache, mask, eos: int, pad: int, max_new_tokens: int,
                capture: bool = True) -> list[list[int]]:
    """Greedy tokens per row, continuing `cache` (whose attention mask is `mask`) from the next-token
    `logits` [b, V]; a row ends at its EOS (kept) or at max_new_tokens. A finished row goes on with `pad` tokens,
    whose results are dropped. `capture`: on CUDA, replay the step as a CUDA graph."""
    fixed = _fixable(model, cache)
    record = _recorder(mask.device, capture) if fixed else None
    stream = _capture_stream(mask.device) if record is cuda_graph else None
    if stream is not None:
        stream.wait_stream(torch.cuda.current_stream(mask.device))
    with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
        step = _FixedStep(model, cache, mask, max_new_tokens, record) if fixed else _GrowingStep(model, cache, mask)
        rows = [[] for _ in range(len(logits))]
        done = torch.zeros(len(logits), dtype=torch.bool, device=logits.device)
        token = logits.argmax(-1)
        for n in range(max_new_tokens):
            for row, t, finished in zip(rows, token.tolist(), done.tolist()):
                if not finished:
                    row.append(t)
            done |= token == eos
            if n == max_new_tokens - 1 or bool(done.all()):
                break
            token = step(token.masked_fill(done, pad))
    if stream is not None:
        torch.cuda.current_stream(mask.device).wait_stream(stream)
    return rows
