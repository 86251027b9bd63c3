"""`clbench submit`: submission.py (name and ownership checks, the file copied and recorded, the card run as
a sweep, the row ranked) and method_check.py (a method class against the interface, and a trial on the tiny
model; run in the confined child by harness.sandbox_child for every method clbench did not write)."""
