"""The README's two commands in either order: the test command leaves no `.venv` in the project, and the setup
command names a `.venv` that is not a folder in one line before it installs anything."""
import configparser
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_tox_writes_no_venv_redirect_where_setup_makes_its_folder():
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    assert tox.getboolean("tox", "venv_redirect", fallback=True) is False


def test_setup_refuses_a_venv_file_in_one_line_before_installing(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    (tmp_path / ".venv").write_text(".tox/py\n")  # what tox 4.67 writes by default
    done = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "scripts/setup.sh: .venv is a file, not a folder (.tox/py); remove it (rm .venv) and run again"]
    assert (tmp_path / ".venv").read_text() == ".tox/py\n"
