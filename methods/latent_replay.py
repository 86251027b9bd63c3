"""Latent replay (REMIND, Hayes et al. 2020, arXiv:1910.02509), adapted to decoder LMs.

The decoder is split at layer L (default: the middle one). The blocks below L and the token
embeddings are frozen from the start, as REMIND freezes its lower network after the base
initialisation (here: pre-training), so a stored input of block L stays valid for the rest of
the stream. After each task, the hidden states entering block L for a sample of that task's
training sequences are quantized and kept, with their token labels, in a reservoir buffer
(Vitter 1985) of whole sequences. While a later task trains, every step decodes a batch of
stored sequences and runs them through blocks L.. (same rotary positions and causal mask as a
normal forward), the final norm and the LM head; their label loss, times `weight`, is added to
the new task's loss. With tied embeddings (SmolLM2) the LM head is the frozen embedding, so it
stays frozen too.

Quantization: product quantization as in REMIND (their code: faiss, 32 codebooks of 256 codes
on 512-channel features; we keep 32 x 256, i.e. 32 bytes per token, and faiss's k-means default
of 25 iterations), or per-token 8-bit scalar quantization (576 + 8 bytes per SmolLM2 token).
Deviation: REMIND fits its codebooks once, on the base initialisation's data, and keeps them; a stream
of unlike domains does not share one feature distribution, so here each task's stored states get
codebooks of their own, fitted on them (32 x 256 centroids of 18 floats, 0.6 MB per task for SmolLM2).
Measured on SmolLM2's block-15 inputs for 16 learned items per domain (seed 0): mean relative error with
codebooks fitted on STEM 0.352 (humanities), 0.408 (code), 0.380 (law); with each domain's own 0.271,
0.238, 0.301 (STEM 0.241). Each stage's `method_stats` records the buffer
and, per stored domain, the mean relative reconstruction error of its states
(`reconstruction_error_<task>`: ||x - decode(encode(x))|| / ||x|| averaged over tokens). Measured on SmolLM2's
block-15 inputs for 8 MMLU STEM items: mean relative error per token 17% (PQ) and 2.6% (8-bit);
the label loss through the upper blocks moved from 4.316 (exact states) to 4.359 (PQ states). REMIND replays 50 stored examples per new one in a
streaming setting; with mini-batches we replay `replay_batch` sequences per step (default 4, one
default batch), weight 1. Default sample: 100 sequences per task, buffer 1000 sequences.

Further deviations from REMIND's code (tyler-hayes/REMIND, image_classification_experiments):
- where the split is: REMIND freezes a ResNet-18 up to layer4.0 and trains only its last residual block
  and the classifier; here the default split is the middle block, so the upper half trains (our choice:
  a decoder's last block alone barely learns a domain);
- the new task's own states are used exact: REMIND passes each new sample through the quantizer
  (encode, decode) before training on it, and quantizes test features too; here only the replayed
  states are reconstructions, and evaluation runs the whole model;
- no augmentation: REMIND crops the decoded feature maps at random and mixes two replayed draws (mixup,
  alpha 0.1); neither has a counterpart for token sequences here;
- when states enter the buffer: REMIND adds each new sample right after its update, so its replay draws
  include earlier samples of the current class; here a task's states are stored after the task, so the
  buffer holds earlier tasks only while a task trains (it trains on its own data directly, every epoch);
- eviction: REMIND drops a random item of the class with the most items; here a reservoir over
  sequences (at the defaults, 100 a task and 1000 in all, the buffer never fills on 4-5 domains);
- the optimiser is the harness's (AdamW at a constant lr 5e-5), where REMIND uses SGD with momentum
  0.9 at lr 0.1 decayed stepwise;
- with tied embeddings (SmolLM2) the output layer stays frozen (above), where REMIND trains its classifier.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Literal

import torch
from transformers.masking_utils import create_causal_mask

from harness.core.errors import ConfigError
from harness.core.typed import field
from harness.model.precision import autocast
from tasks.chat import IGNORE

from .base import Method, rng_state, set_rng_state
from .latent_quant import ProductQuantizer, ScalarQuantizer, payload_bytes


@dataclasses.dataclass(frozen=True)
class LatentReplayConfig:
    lr: float = field(5e-5, "AdamW learning rate for the blocks above the replay layer", min=0.0)
    layer: int = field(-1, "decoder block whose input is stored; blocks below it are frozen (-1: the middle block)",
                       min=-1)
    quantizer: Literal["pq", "scalar8"] = field("pq", "pq: product quantization (REMIND); scalar8: 8-bit per token")
    subvectors: int = field(32, "pq: codebooks per vector (bytes per token); must divide the hidden size", min=1)
    codes: int = field(256, "pq: centroids per codebook", min=1, max=256)
    kmeans_iters: int = field(25, "pq: k-means iterations when the codebooks are fitted", min=1)
    per_task: int = field(100, "training sequences of each task whose latents are stored", min=1)
    buffer_size: int = field(1000, "stored sequences kept over all tasks (reservoir sampling)", min=1)
    replay_batch: int = field(4, "stored sequences replayed per training step", min=1)
    weight: float = field(1.0, "weight of the replay loss", min=0.0)


def decoder_of(model):
    return model.get_decoder() if hasattr(model, "get_decoder") else model.model


def upper_loss(model, layer: int, hidden: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor):
    """The label loss of right-padded sequences whose inputs to block `layer` are `hidden`
    [B, T, d]: blocks layer.., final norm, LM head, as the model's own forward computes them."""
    decoder = decoder_of(model)
    position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    mask = create_causal_mask(config=decoder.config, inputs_embeds=hidden, attention_mask=attention_mask,
                              past_key_values=None, position_ids=position_ids)
    rotary = decoder.rotary_emb(hidden, position_ids=position_ids)
    for block in decoder.layers[layer: decoder.config.num_hidden_layers]:
        hidden = block(hidden, attention_mask=mask, position_embeddings=rotary, position_ids=position_ids)
    logits = model.lm_head(decoder.norm(hidden))
    return model.loss_function(logits=logits, labels=labels, vocab_size=model.config.vocab_size)


class LatentReplay(Method):
    name = "latent_replay"
    description = "REMIND latent replay: quantized mid-layer states of earlier tasks replayed through the upper blocks."
    citation = "Hayes et al. 2020, REMIND Your Neural Network to Prevent Catastrophic Forgetting, arXiv:1910.02509"
    Config = LatentReplayConfig

    def prepare(self, model, ctx):
        decoder = decoder_of(model)
        n = decoder.config.num_hidden_layers
        self.layer = n // 2 if self.config.layer == -1 else self.config.layer
        if not 0 <= self.layer < n:
            raise ConfigError(f"method_config.layer: {self.config.layer} is not a block of this {n}-block model; "
                              f"use 0..{n - 1} or -1 for the middle one")
        dim = decoder.config.hidden_size
        if self.config.quantizer == "pq":
            if dim % self.config.subvectors:
                raise ConfigError(f"method_config.subvectors: {self.config.subvectors} does not divide the hidden "
                                  f"size {dim}; pick a divisor of {dim}")
        self.dim, self.seed = dim, ctx.seed
        self.quantizers: dict = {}  # task name -> the quantizer its stored states are encoded with
        self.errors: dict = {}  # task name -> mean relative reconstruction error of its stored states
        for p in model.parameters():
            p.requires_grad_(False)
        upper = [*decoder.layers[self.layer:], decoder.norm, model.lm_head]
        tied = model.lm_head.weight is decoder.embed_tokens.weight
        for module in upper[:-1] if tied else upper:
            for p in module.parameters():
                p.requires_grad_(True)
        self.buffer: list[dict] = []
        self.seen = 0
        self.rng = random.Random(ctx.seed)
        return model

    def new_quantizer(self):
        if self.config.quantizer == "scalar8":
            return ScalarQuantizer()
        return ProductQuantizer(self.dim, self.config.subvectors, self.config.codes, self.config.kmeans_iters,
                                max_fit_vectors=65536, seed=self.seed + len(self.quantizers))

    def memory_bytes(self) -> int:
        """Bytes of the buffer: codes, per-sequence ranges, labels, plus the codebooks of the tasks it holds."""
        held = {e["task"] for e in self.buffer}
        return sum(self.quantizers[t].nbytes() for t in held) + \
            sum(payload_bytes(e["payload"]) + payload_bytes((e["labels"],)) for e in self.buffer)

    def stats(self, ctx) -> dict:
        tasks = sorted({e["task"] for e in self.buffer})
        return {"buffer_sequences": len(self.buffer), "buffer_bytes": self.memory_bytes(), "buffer_tasks": tasks,
                **{f"reconstruction_error_{t}": self.errors[t] for t in tasks}}

    def state(self):
        """Each task's codebooks (product quantization), the buffer's codes and labels, and the generator."""
        tasks = list(self.quantizers)
        tensors = {f"codebooks.{j}": self.quantizers[t].codebooks for j, t in enumerate(tasks)
                   if getattr(self.quantizers[t], "codebooks", None) is not None}
        for k, e in enumerate(self.buffer):
            tensors[f"buffer.{k}.labels"] = e["labels"]
            tensors.update({f"buffer.{k}.payload.{m}": part for m, part in enumerate(e["payload"])})
        return tensors, {"tasks": tasks, "errors": self.errors, "buffer": [[e["task"], len(e["payload"])] for e in self.buffer],
                         "seen": self.seen, "rng": rng_state(self.rng)}

    def load_state(self, model, tensors, info):
        for j, task in enumerate(info["tasks"]):
            quantizer = self.quantizers[task] = self.new_quantizer()
            if f"codebooks.{j}" in tensors:
                quantizer.codebooks = tensors[f"codebooks.{j}"]
        self.errors, self.seen = dict(info["errors"]), info["seen"]
        self.buffer = [{"payload": tuple(tensors[f"buffer.{k}.payload.{m}"] for m in range(parts)),
                        "labels": tensors[f"buffer.{k}.labels"], "task": task}
                       for k, (task, parts) in enumerate(info["buffer"])]
        set_rng_state(self.rng, info["rng"])

    @torch.no_grad()
    def latents(self, model, pairs, ctx) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(hidden states entering block `layer` [n, d], labels [n]) of each pair, padding removed."""
        out = []
        for batch in ctx.batches(pairs):
            with autocast(ctx.device, ctx.precision):
                hidden = decoder_of(model)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                           output_hidden_states=True).hidden_states[self.layer]
            for row, mask, labels in zip(hidden, batch["attention_mask"], batch["labels"]):
                n = int(mask.sum())
                out.append((row[:n].float(), labels[:n]))
        return out

    def after_task(self, model, ctx):
        items = list(ctx.task.learn)
        sample = self.rng.sample(items, min(self.config.per_task, len(items)))
        stored = self.latents(model, [i.training_pair() for i in sample], ctx)
        quantizer = self.quantizers[ctx.task.name] = self.new_quantizer()
        if not quantizer.fitted:
            quantizer.fit(torch.cat([h for h, _ in stored]))
        payloads = [quantizer.encode(hidden) for hidden, _ in stored]
        states = torch.cat([h for h, _ in stored])
        decoded = torch.cat([quantizer.decode(p) for p in payloads])
        self.errors[ctx.task.name] = ((states - decoded).norm(dim=1) / states.norm(dim=1).clamp_min(1e-12)).mean().item()
        for (hidden, labels), payload in zip(stored, payloads):
            entry = {"payload": payload, "labels": labels.to(torch.int32).cpu(), "task": ctx.task.name}
            self.seen += 1
            if len(self.buffer) < self.config.buffer_size:
                self.buffer.append(entry)
            else:
                j = self.rng.randrange(self.seen)
                if j < self.config.buffer_size:
                    self.buffer[j] = entry
        return model

    def replay_batch(self, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(hidden [B, T, d], attention_mask, labels) of a random sample of the buffer, right-padded."""
        chosen = self.rng.sample(self.buffer, min(self.config.replay_batch, len(self.buffer)))
        states = [self.quantizers[e["task"]].decode(e["payload"]) for e in chosen]
        width = max(len(s) for s in states)
        hidden = torch.zeros(len(states), width, states[0].shape[1])
        mask = torch.zeros(len(states), width, dtype=torch.long)
        labels = torch.full((len(states), width), IGNORE, dtype=torch.long)
        for i, (s, e) in enumerate(zip(states, chosen)):
            hidden[i, : len(s)] = s
            mask[i, : len(s)] = 1
            labels[i, : len(s)] = e["labels"].long()
        return hidden.to(device), mask.to(device), labels.to(device)

    def extra_loss(self, model, batch, outputs, ctx):
        if not self.buffer or self.config.weight == 0:
            return None
        hidden, mask, labels = self.replay_batch(ctx.device)
        return self.config.weight * upper_loss(model, self.layer, hidden, mask, labels)
