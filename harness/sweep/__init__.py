"""Many runs: sweep.py (a config expanded into RunSpecs, every data row checked before any model, finished runs
skipped, the results folder locked), scheduler.py (the only Ray import: stage 0 once per protocol, then one Ray
task per run) and tune.py (`clbench tune`: each method's grid run as a sweep on a validation stream)."""
