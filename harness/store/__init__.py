"""Results on disk. files.py: how a result file is written (schema versions, atomic writes, digests);
validate.py: whether a stored run file can be trusted (schema, digest, run_id == hash of its spec, per-item
records, metrics computable); store.py: Store, the results folder (runs/, stage0/, its lock), which hands out
only valid runs; provenance.py: what a result records about where it was computed (packages, git, machine);
submissions.py: the stored submission records read back. Nothing here runs or scores a model."""
