"""What a run is, before anything runs: a sweep config read and checked (config.py; the presets/ are the
protocol cards), RunSpec, the frozen and content-hashed description of one run, and the sweep's expansion
into RunSpecs (spec.py), the protocol card's version (protocol.py), and what a method declares (sandbox.py:
a built-in imported here, any other method only in a confined child, whose process protocol is here too)."""
