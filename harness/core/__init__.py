"""The ground floor: what every other part of clbench, tasks/ and methods/ included, may use. Errors
(errors.py), typed dataclasses from mappings with per-field errors (typed.py: a method's Config fields come
from `typed.field`), bounded reading of YAML and JSON someone else wrote (yaml_file.py, json_file.py), and
"did you mean" (suggest.py). Nothing here imports anything else of clbench."""
