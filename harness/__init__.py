"""clbench harness: specs, the stage loop, evaluation, metrics, store, reports, CLI."""
