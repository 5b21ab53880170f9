"""harness.sandbox: untrusted programs run with limits, cannot escape their temp dir, the network or their
process group. Attack tests run with and without the user+network namespace, so the guard alone is covered."""
from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time

import pytest

from harness import sandbox
from harness.sandbox import run_python

needs_namespace = pytest.mark.skipif(not sandbox.namespace_available(), reason="unshare not usable here")
ISOLATE = [pytest.param(True, id="namespace", marks=needs_namespace), pytest.param(False, id="guard-only")]


@pytest.fixture(params=ISOLATE)
def isolate(request):
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
    except socket.timeout:
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


@needs_namespace
def test_namespace_gives_a_separate_network_namespace():
    result = run_python("import os, sys\nprint(os.readlink('/proc/self/ns/net'), file=sys.stderr)\n",
                        timeout_s=2, isolate=True)
    assert result.passed, result.detail
    assert result.detail.strip() != os.readlink("/proc/self/ns/net")


def test_fallback_without_unshare(monkeypatch):
    sandbox.namespace_available.cache_clear()
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    try:
        assert sandbox.namespace_available() is False
        assert run_python("print('ok')", timeout_s=2).passed  # auto mode falls back to the guard alone
        with pytest.raises(RuntimeError, match="not available"):
            run_python("print('ok')", timeout_s=2, isolate=True)
    finally:
        sandbox.namespace_available.cache_clear()


def test_fork_is_blocked(isolate):
    result = run_python("import os\npid = os.fork()\nif pid == 0:\n    os._exit(0)\n", timeout_s=2, isolate=isolate)
    assert result.status == "failed" and "os.fork is disabled" in result.detail


def test_subprocess_is_blocked_and_leaves_no_process(isolate, sleep_marker):
    program = f"import subprocess\nsubprocess.Popen(['sleep', '{sleep_marker}'])\n"
    result = run_python(program, timeout_s=2, isolate=isolate)
    assert result.status == "failed" and "Popen is disabled" in result.detail
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
    assert result.status == "failed" and "disabled in sandbox" in result.detail
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("connect", ["socket.create_connection(('127.0.0.1', {port}), timeout=1)",
                                     "socket.socket().connect(('127.0.0.1', {port}))"])
def test_network_is_blocked(isolate, tcp_server, connect):
    port = tcp_server.getsockname()[1]
    result = run_python("import socket\n" + connect.format(port=port), timeout_s=2, isolate=isolate)
    assert not result.passed and "disabled in sandbox" in result.detail
    assert not received_connection(tcp_server)


@needs_namespace
def test_namespace_blocks_network_even_past_the_guard(tcp_server):
    # The C socket class is still reachable through the guard's subclass; only the namespace stops this.
    port = tcp_server.getsockname()[1]
    program = f"import _socket\nraw = _socket.socket.__mro__[1]()\nraw.connect(('127.0.0.1', {port}))\n"
    result = run_python(program, timeout_s=2, isolate=True)
    assert result.status == "failed" and ("ConnectionRefused" in result.detail or "unreachable" in result.detail)
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
