"""Model-written code runs in a separate, limited process."""
from tasks.code_exec import extract_code, passes


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
