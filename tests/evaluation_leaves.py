"""`leaves(output)`: {path: value} of every number, flag and token of an evaluation's output (timings left out),
so two evaluations of the same model can be compared cell by cell (tests/test_packed_linears.py, the eval bench)."""


def leaves(o, path=()) -> dict:
    if isinstance(o, dict):
        return {k: v for key, val in o.items() if "seconds" not in key for k, v in leaves(val, (*path, key)).items()}
    if isinstance(o, list):
        return {k: v for i, val in enumerate(o) for k, v in leaves(val, (*path, i)).items()}
    return {path: o}
