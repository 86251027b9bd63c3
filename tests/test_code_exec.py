"""Model-written code runs in a separate, limited process."""
import os
import signal
import socket

import pytest

from tasks import confine
from tasks.code_exec import extract_code, passes

needs = {k: pytest.mark.skipif(confine.abi() < v, reason=f"the kernel's Landlock ABI is {confine.abi()}, "
                               f"below {v}: {what} is not confined on this machine")
         for k, v, what in (("fs", 1, "writing outside the folder"), ("tcp", 4, "TCP"), ("signal", 6, "signalling"))}


def test_correct_code_passes():
    assert passes("def add(a, b):\n    return a + b", "assert add(2, 3) == 5")


def test_wrong_code_fails():
    assert not passes("def add(a, b):\n    return a - b", "assert add(2, 3) == 5")


def test_infinite_loop_is_stopped():
    assert not passes("while True:\n    pass", "", timeout=2)


def test_unbounded_allocation_is_stopped():
    assert not passes("x = []\nwhile True:\n    x.append(' ' * 10**7)", "", timeout=10, memory_mb=256)


def test_runs_in_a_temporary_directory(tmp_path):
    code = "import os\nopen('made_here.txt', 'w').write('x')\nassert os.getcwd().startswith('/tmp')"
    assert passes(code, "")
    assert not (tmp_path / "made_here.txt").exists()


def test_extract_code_from_fenced_reply():
    reply = "Here you go:\n```python\ndef f():\n    return 1\n```\nDone."
    assert extract_code(reply) == "def f():\n    return 1\n"
    assert extract_code("def g(): pass") == "def g(): pass"


@needs["fs"]
def test_writing_outside_its_directory_is_refused(tmp_path):
    target = tmp_path / "escaped.txt"
    assert not passes(f"open({str(target)!r}, 'w').write('x')", "")
    assert not passes(f"import os\nos.mkdir({str(tmp_path / 'd')!r})", "")
    assert not target.exists() and not (tmp_path / "d").exists()
    # the same write from an unconfined process works: the refusal is the confinement, not the path
    target.write_text("x")
    assert not passes(f"import os\nos.remove({str(target)!r})", "") and target.exists()


@needs["tcp"]
def test_tcp_connections_are_refused():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # reachable from here
        assert not passes(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)", "")
        assert not passes("import socket\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen()", "")


@needs["signal"]
def test_signalling_other_processes_is_refused():
    got = []
    old = signal.signal(signal.SIGUSR1, lambda *_: got.append(1))
    try:
        assert not passes(f"import os, signal\nos.kill({os.getpid()}, signal.SIGUSR1)", "")
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert got == []
