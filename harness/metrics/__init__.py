"""What the numbers are: pure functions, no files, no models. metrics.py: OP, BWT, FWT, plasticity, forgetting
and the headline from a run's accuracy and log-probability matrices; run_metrics.py: one run file -> its row of
metrics; stats.py: bootstrap intervals over items and runs, paired tests, rank bands. It sits below store/
because a stored run is valid only when its metrics can be computed (validate.report_problem)."""
