"""What the store's runs say, read from the store alone (no method code is imported): leaderboard.py (sections
per protocol, rows with intervals, rank bands, comparisons with full, the Pareto front), tables.py (its columns,
and the board as Markdown, CSV, LaTeX and HTML), figures.py (the paper figures) and power.py (variance
components and the sizes that detect a given difference, `clbench power`)."""
