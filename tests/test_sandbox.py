"""harness.evaluation.sandbox: untrusted programs run with limits, cannot escape their temp dir, the network or their
process group. Attack tests run with and without OS isolation (bubblewrap), so the guard alone is covered;
tests/test_sandbox_hostile.py attacks the OS layer itself. Under CI=true a missing isolation fails the tests."""
from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import HarnessError
from harness.evaluation import sandbox
from harness.evaluation.sandbox import SandboxUnavailable, run_python

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_os_isolation():
    """Skip where the OS sandbox cannot run, except under CI, where that is a failure."""
    report = sandbox.isolation_report()
    if not report["isolated"]:
        (pytest.fail if IN_CI else pytest.skip)(f"no OS isolation here: {report['reason']}")


@pytest.fixture
def isolated():
    require_os_isolation()
    return True


@pytest.fixture(params=[pytest.param(True, id="isolated"), pytest.param(False, id="guard-only")])
def isolate(request):
    if request.param:
        require_os_isolation()
    return request.param


@pytest.fixture
def sleep_marker():
    """A unique `sleep` argument, so pgrep finds only processes this test started."""
    return f"{1000 + random.random() * 1000:.6f}"


def survivors(marker: str, wait_s: float = 1.0) -> str:
    """Command lines still running with `marker` after up to wait_s (SIGKILL delivery is asynchronous)."""
    deadline = time.monotonic() + wait_s
    while True:
        out = subprocess.run(["pgrep", "-af", f"sleep {marker}"], capture_output=True, text=True).stdout
        if not out or time.monotonic() > deadline:
            return out
        time.sleep(0.05)


@pytest.fixture
def tcp_server():
    """A listening socket on 127.0.0.1; a connect() that succeeded sits in its backlog even without accept()."""
    server = socket.create_server(("127.0.0.1", 0))
    yield server
    server.close()


def received_connection(server: socket.socket) -> bool:
    server.settimeout(0.2)
    try:
        server.accept()[0].close()
        return True
    except TimeoutError:
        return False


def test_passing_program_passes():
    result = run_python("def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\n", timeout_s=2)
    assert result.status == "passed" and result.passed


def test_assertion_failure_fails_with_traceback_detail():
    result = run_python("def add(a, b):\n    return a - b\n\nassert add(2, 3) == 5, 'wrong sum'\n", timeout_s=2)
    assert result.status == "failed" and not result.passed
    assert "AssertionError: wrong sum" in result.detail and len(result.detail) <= sandbox.DETAIL_CHARS


def test_infinite_loop_times_out_in_bounded_time():
    start = time.monotonic()
    result = run_python("while True:\n    pass\n", timeout_s=1)
    assert result.status == "timeout"
    assert time.monotonic() - start < 2.5


def test_program_can_write_in_its_own_cwd_which_is_removed_afterwards():
    program = """
import os, shutil, sys, tempfile
with open("out.txt", "w") as f:
    f.write("hello")
assert open("out.txt").read() == "hello"
os.makedirs("sub/dir"); shutil.move("out.txt", "sub/dir/out.txt"); shutil.rmtree("sub")
with tempfile.NamedTemporaryFile("w") as f:  # TMPDIR is the sandbox dir
    f.write("x")
print(os.getcwd(), file=sys.stderr)
"""
    result = run_python(program, timeout_s=2)
    assert result.passed, result.detail
    workdir = result.detail.splitlines()[-1]
    assert os.path.basename(workdir).startswith("sandbox-") and workdir != os.getcwd()
    assert not os.path.exists(workdir)


def test_isolated_mode_and_minimal_env(monkeypatch):
    monkeypatch.setenv("SANDBOX_TEST_SECRET", "s3cret")
    monkeypatch.setenv("PYTHONPATH", "/nonexistent")
    program = """
import os, sys
assert sys.flags.isolated == 1
assert "SANDBOX_TEST_SECRET" not in os.environ and "PYTHONPATH" not in os.environ, os.environ
"""
    result = run_python(program, timeout_s=2)
    assert result.passed, result.detail


def test_isolated_child_has_its_own_namespaces_uid_and_read_only_view(isolated):
    program = """
import json, os, sys
print(json.dumps({"pid": os.getpid(), "uid": os.getuid(), "net": os.readlink("/proc/self/ns/net"),
                  "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()), "root": sorted(os.listdir("/")),
                  "etc": os.listdir("/etc"), "tmp": os.listdir("/tmp")}), file=sys.stderr)
"""
    result = run_python(program, timeout_s=5, require_isolation=True)
    assert result.passed, result.detail
    seen = json.loads(result.detail.splitlines()[-1])
    assert seen["uid"] != 0 and seen["uid"] != os.getuid()
    assert seen["pid"] < 10 and max(seen["pids"]) < 10  # its own PID namespace: no host process is visible
    assert seen["net"] != os.readlink("/proc/self/ns/net")
    assert not {"home", "run", "var", "mnt"} & set(seen["root"]) and seen["etc"] == ["ld.so.cache"]
    # none of the host's /tmp, except where Python itself lives (a checkout or venv under /tmp is bound read-only)
    python_dirs = {Path(p).resolve().parts[2] for p in (sys.prefix, sys.base_prefix, *sys.path)
                   if p and len(Path(p).resolve().parts) > 2 and Path(p).resolve().parts[1] == "tmp"}
    private = [t for t in seen["tmp"] if t not in python_dirs]
    assert len(private) == 1 and private[0].startswith("sandbox-"), seen["tmp"]
    report = sandbox.isolation_report()
    assert report["tool"] == "bwrap" and report["isolated"] and report["pid_namespace"] and report["reason"] is None


def test_without_bwrap_runs_guarded_warns_once_and_can_refuse(monkeypatch, caplog):
    sandbox.isolation_report.cache_clear()
    sandbox._warn_once.cache_clear()
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    try:
        report = sandbox.isolation_report()
        assert report["tool"] is None and not report["isolated"] and "bwrap" in report["reason"]
        with caplog.at_level("WARNING", logger="harness.evaluation.sandbox"):
            assert run_python("print('ok')", timeout_s=5).passed  # falls back to rlimits and the guard
            assert not run_python("assert False", timeout_s=5).passed
        assert sum("no operating-system isolation" in r.getMessage() for r in caplog.records) == 1
        with pytest.raises(SandboxUnavailable, match="without operating-system isolation") as err:
            run_python("print('ok')", timeout_s=5, require_isolation=True)
        assert isinstance(err.value, HarnessError)
    finally:
        sandbox.isolation_report.cache_clear()
        sandbox._warn_once.cache_clear()


def test_fork_is_blocked(isolate):
    result = run_python("import os\npid = os.fork()\nif pid == 0:\n    os._exit(0)\n", timeout_s=2, isolate=isolate)
    assert result.status == "failed" and "os.fork is disabled" in result.detail


def test_subprocess_is_blocked_and_leaves_no_process(isolate, sleep_marker):
    program = f"import subprocess\nsubprocess.Popen(['sleep', '{sleep_marker}'])\n"
    result = run_python(program, timeout_s=2, isolate=isolate)
    assert result.status == "failed" and "subprocess is disabled" in result.detail
    assert not survivors(sleep_marker)


def test_fork_bomb_does_not_succeed(isolate):
    program = """
import os
while True:
    try:
        if os.fork() == 0:
            os._exit(0)
    except Exception:
        pass
"""
    start = time.monotonic()
    result = run_python(program, timeout_s=1, isolate=isolate)
    assert result.status == "timeout"
    assert time.monotonic() - start < 2.5


def test_children_forked_behind_the_guards_back_are_killed(isolate, sleep_marker):
    # ctypes reaches libc directly, past the guard: only the process-group kill cleans up here.
    program = f"""
import ctypes
libc = ctypes.CDLL(None)
if libc.fork() == 0:
    argv = (ctypes.c_char_p * 3)(b"sleep", b"{sleep_marker}", None)
    libc.execvp(b"sleep", argv)
    libc._exit(1)
"""
    run_python(program, timeout_s=2, isolate=isolate)
    assert not survivors(sleep_marker)


ATTACKS = {
    "os.remove": "import os\nos.remove({path!r})",
    "os.unlink via dir_fd": "import os\nfd = os.open({dir!r}, os.O_RDONLY)\nos.unlink({name!r}, dir_fd=fd)",
    "os.rename": "import os\nos.rename({path!r}, 'stolen.txt')",
    "shutil.rmtree": "import shutil\nshutil.rmtree({dir!r})",
    "open w": "open({path!r}, 'w').write('pwned')",
    "open a": "open({path!r}, 'a').write('pwned')",
    "pathlib": "import pathlib\npathlib.Path({path!r}).write_text('pwned')",
    "os.open": "import os\nos.write(os.open({path!r}, os.O_WRONLY | os.O_TRUNC), b'pwned')",
    "io.FileIO": "import io\nio.FileIO({path!r}, 'w').write(b'pwned')",
    "os.truncate": "import os\nos.truncate({path!r}, 0)",
    "hard link": "import os\nos.link({path!r}, 'l')\nopen('l', 'w').write('pwned')",
    "reload os": "import importlib, os\nimportlib.reload(os)\nos.remove({path!r})",
    "posix": "import posix\nposix.unlink({path!r})",
}


@pytest.mark.parametrize("attack", ATTACKS)
def test_files_outside_the_sandbox_survive(isolate, tmp_path, attack):
    victim = tmp_path / "victim" / "keep.txt"
    victim.parent.mkdir()
    victim.write_text("precious")
    program = ATTACKS[attack].format(path=str(victim), dir=str(victim.parent), name=victim.name)
    result = run_python(program, timeout_s=2, isolate=isolate)
    assert result.status == "failed"
    # the guard stops each of these; isolated, some fail earlier because the host path is not there at all
    assert "disabled in sandbox" in result.detail or (isolate and "No such file or directory" in result.detail)
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("connect", ["socket.create_connection(('127.0.0.1', {port}), timeout=1)",
                                     "socket.socket().connect(('127.0.0.1', {port}))"])
def test_network_is_blocked(isolate, tcp_server, connect):
    port = tcp_server.getsockname()[1]
    result = run_python("import socket\n" + connect.format(port=port), timeout_s=2, isolate=isolate)
    assert not result.passed and "disabled in sandbox" in result.detail
    assert not received_connection(tcp_server)


@pytest.mark.parametrize("program", ["x = bytearray(10**11)\n",
                                     "x = []\nwhile True:\n    x.append(bytearray(2**20))\n"])
def test_memory_hog_is_stopped(program):
    start = time.monotonic()
    result = run_python(program, timeout_s=3, memory_mb=128)
    assert result.status in ("memory", "failed", "timeout") and not result.passed
    assert time.monotonic() - start < 4
    if "bytearray(10**11)" in program:
        assert result.status == "memory" and "MemoryError" in result.detail


def _cli(*args):
    from click.testing import CliRunner

    from harness.cli import main
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_require_sandbox_refuses_to_start_without_isolation(tmp_path, monkeypatch):
    sandbox.isolation_report.cache_clear()
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    common = ["--model", "tiny-random", "--limit", "1", "--runs-dir", str(tmp_path / "runs"), "--require-sandbox"]
    try:
        for command in (["run", "--method", "ar", "--task", "humaneval"],
                        ["bench", "--tasks", "humaneval", "--methods", "ar", "--out", str(tmp_path / "report")]):
            result = _cli(*command, *common)
            assert result.exit_code == 2, result.output
            assert "without operating-system isolation" in result.output
            assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
        assert not (tmp_path / "runs").exists() and not (tmp_path / "report").exists()
    finally:
        sandbox.isolation_report.cache_clear()


def test_run_records_the_sandbox_in_its_manifest(isolated, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "p0", "prompt": "abc abc"}) + "\n")
    result = _cli("run", "--method", "ar", "--model", "tiny-random", "--prompts", str(prompts), "--max-new-tokens", "4",
                  "--runs-dir", str(tmp_path / "runs"), "--require-sandbox")
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["config"]["require_sandbox"] is True
    assert info["sandbox"] == sandbox.isolation_report() and info["sandbox"]["isolated"] is True
