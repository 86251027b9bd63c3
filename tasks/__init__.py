"""Domain tasks and probes: data loading, prompt formats, scorers' inputs, the default stream."""
