"""A model and its tokenizer, with no notion of a run: loading one (models.py: SmolLM2 from its GGUF, the tiny
random model, any Hugging Face model), the device and numeric precision (precision.py), token rows padded into
batches (padding.py), scoring and greedy decoding in batches (scoring.py) and measures of generated text
(generation_metrics.py). It stands below methods/: a method that scores or generates itself (sdft) or needs
autocast (ewc, latent_replay) takes it from here."""
