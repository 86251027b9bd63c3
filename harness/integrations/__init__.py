"""The outside tools clbench works with: lm-eval (lmeval_bridge.py: clbench items as lm-eval tasks for
`clbench export-lm-eval`, lm-eval run in-process for the cross-check and `lm_eval:<task>` probes) and
TensorBoard (tracking.py: `tracking: tensorboard`, off by default). They sit below spec/ because a config is
checked against them (is the lm-eval task there, is the tracking extra installed) before any compute."""
