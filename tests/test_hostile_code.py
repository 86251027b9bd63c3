"""#16: model-written code cannot leave processes behind or make the scorer raise."""
import sys
import time

import psutil

from tasks.code_exec import passes


def _strays(before: set[int]) -> list[int]:
    """Python -I processes started since `before` that are still alive (not zombies)."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if p.info["pid"] not in before and cmd[:2] == [sys.executable, "-I"] and p.info["status"] != "zombie":
            out.append(p.info["pid"])
    return out


def test_a_program_can_start_no_process_but_may_use_threads():
    before = set(psutil.pids())
    bomb = "import os, time\nfor _ in range(300):\n    if os.fork() == 0:\n        time.sleep(60)\n        os._exit(0)\n"
    assert not passes(bomb, "assert True")  # the first fork fails: 300 were allowed before
    assert not passes("import subprocess\nsubprocess.run(['true'], check=True)", "")
    assert passes("import threading\nt = threading.Thread(target=print)\nt.start()\nt.join()", "assert True")
    time.sleep(0.3)
    assert _strays(before) == []


def test_a_grandchild_does_not_survive_the_timeout():
    before = set(psutil.pids())
    code = ("import os, time\nif os.fork() == 0:\n    if os.fork() == 0:\n        time.sleep(60)\n    os._exit(0)\n"
            "time.sleep(60)\n")
    assert not passes(code, "", timeout=2)
    time.sleep(0.3)
    assert _strays(before) == []


def test_nul_bytes_and_huge_programs_give_a_verdict_not_an_exception():
    assert passes("x = 1  # \\0 in a comment is fine", "assert x == 1")
    assert not passes("x = 1\x00", "assert x == 1")
    assert passes("x = 1\n" + "y = 2\n" * 40_000, "assert x == 1")  # 240 KB: over the argument-size limit of -c
    assert passes("x = '\ud800'", "assert len(x) == 1")  # a lone surrogate (written as '?'), as a tokenizer may produce
