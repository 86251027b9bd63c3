"""One run, on one worker: runner.py (data -> model -> stage 0 -> prepare -> per task: the method's hooks,
training, evaluation; resume; the result file), training.py (the training loop), evaluation.py (every task
view and probe scored after a stage), compute.py (seconds, device-hours, memory, tokens/s), checkpoints.py
(per-stage trainable parameters, for resume), stage_models.py (a stage's model as a Hugging Face folder),
sandboxed.py (a method clbench did not write trained in a confined child, its weights handed over) and
reproduce.py (a stored run executed again and compared cell by cell). The runner drives methods/; it
never imports Ray (sweep/ does)."""
