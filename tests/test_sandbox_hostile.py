"""Hostile programs against harness.evaluation.sandbox, one test per class of attack, parametrized over programs.

Each program is a wrong solution plus an attack that gets past the in-process guard (ctypes, a fresh `posix`
module, the guard's own closures, ...). Each must score 0 while the scorer survives, the host stays unchanged
and no process is left. Early exits are refused with and without OS isolation; the other classes need the OS
layer (bubblewrap), so they skip where it cannot run, except under CI=true, where that fails.
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from harness.evaluation.lm_tasks.humaneval import utils as he
from harness.evaluation.sandbox import run_python
from tests.test_sandbox import require_os_isolation

WRONG = "def add(a, b):\n    return a - b\n\n"
CHECK = "\n\ndef check(candidate):\n    assert candidate(2, 3) == 5\n\ncheck(add)\n"
FRESH_POSIX = "import _imp, importlib.util\nposix = _imp.create_builtin(importlib.util.find_spec('posix'))\n"


def hostile(attack: str, **values) -> str:
    """A wrong `add`, the attack (its {names} filled with repr(values)), then a test that fails."""
    return WRONG + attack.format(**{k: repr(v) for k, v in values.items()}) + CHECK


@pytest.fixture
def isolated():
    require_os_isolation()


@pytest.fixture
def marker():
    """A unique `sleep` argument, so /proc finds only processes this test started."""
    return f"{1000 + random.random() * 1000:.6f}"


def processes_with(marker: str, wait_s: float = 2.0) -> list[str]:
    """Command lines of live processes whose argv holds `marker`, after up to wait_s for SIGKILLs to land."""
    deadline = time.monotonic() + wait_s
    while True:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmd and pid != str(os.getpid()):
                found.append(f"{pid}: {cmd}")
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


# 1. False passes: the program ends the process early "successfully"; its tests never run to the end.
EXITS = {
    "sys.exit(0)": "import sys\nsys.exit(0)",
    "raise SystemExit": "raise SystemExit(0)",
    "os._exit(0)": "import os\nos._exit(0)",
    "os._exit inside the function": "def add(a, b):\n    import os\n    os._exit(0)",
    "ctypes libc _exit": "import ctypes\nctypes.CDLL(None)._exit(0)",
    "atexit hook": "import atexit, os\natexit.register(os._exit, 0)",
    "sys.excepthook": "import os, sys\nsys.excepthook = lambda *args: os._exit(0)",
    "thread calls os._exit": "import os, threading, time\nthreading.Thread(target=os._exit, args=(0,)).start()\n"
                             "time.sleep(2)",
    "signal handler exits": "import os, signal, time\nsignal.signal(signal.SIGALRM, lambda *args: os._exit(0))\n"
                            "signal.setitimer(signal.ITIMER_REAL, 0.01)\ntime.sleep(2)",
    "exec /bin/true via ctypes": "import ctypes\nargv = (ctypes.c_char_p * 2)(b'/bin/true', None)\n"
                                 "ctypes.CDLL(None).execv(b'/bin/true', argv)",
    "unittest.main()": "import unittest\nunittest.main(argv=['x'])",
    "prints a pass marker, exits": "import os\nprint('passed', flush=True)\nos.write(1, b'passed')\nos._exit(0)",
}


@pytest.mark.parametrize("isolate", [pytest.param(True, id="isolated"), pytest.param(False, id="guard-only")])
@pytest.mark.parametrize("attack", EXITS)
def test_early_exit_is_not_a_pass(attack, isolate):
    if isolate:
        require_os_isolation()
    result = run_python(hostile(EXITS[attack]), timeout_s=5, isolate=isolate)
    assert not result.passed and result.status == "failed", result
    if isolate:  # the HumanEval scorer itself: a wrong completion that exits early scores 0
        doc = he.load()["test"][0]  # has_close_elements; `return True` is wrong for some of its tests
        code = EXITS[attack]
        completion = code.split("\n", 1)[1] if code.startswith("def add") else "    return True\n" + code
        assert he.process_results(doc, [completion + "\n"]) == {"pass@1": 0.0}


# 2. Signals to the scorer and other host processes (SIGUSR1 to this test, SIGKILL/SIGSTOP to decoys).
SIGNALS = {
    "ctypes libc.kill": "import ctypes\nlibc = ctypes.CDLL(None)\nfor pid, sig in {targets}:\n    libc.kill(pid, sig)",
    "ctypes libc.killpg": "import ctypes\nlibc = ctypes.CDLL(None)\nfor pid, sig in {targets}:\n"
                          "    libc.killpg(pid, sig)",
    "os.kill of a fresh posix module": FRESH_POSIX + "for pid, sig in {targets}:\n    try:\n"
                                       "        posix.kill(pid, sig)\n    except OSError:\n        pass",
    "pidfd_open syscall + pidfd_send_signal": "import ctypes, signal\nlibc = ctypes.CDLL(None)\n"
                                              "for pid, sig in {targets}:\n    fd = libc.syscall(434, pid, 0)\n"
                                              "    if fd >= 0:\n        signal.pidfd_send_signal(fd, sig)",
    "victims found through /proc": "import ctypes, os\nlibc = ctypes.CDLL(None)\nfor p in os.listdir('/proc'):\n"
                                   "    try:\n        cmd = open('/proc/' + p + '/cmdline', 'rb').read()\n"
                                   "    except OSError:\n        continue\n"
                                   "    if {marker}.encode() in cmd:\n        libc.kill(int(p), 9)",
    "the parent chain": "import ctypes, os, signal\nlibc = ctypes.CDLL(None)\n"
                        "for pid in (os.getppid(), 1, 0):\n    libc.kill(pid, signal.SIGUSR1)",
}


@pytest.fixture
def victims(marker):
    """Two host processes to kill or stop, and the SIGUSR1s this test process receives."""
    procs = [subprocess.Popen(["sleep", marker], start_new_session=True) for _ in range(2)]
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda *args: received.append(args[0]))
    yield procs, received
    signal.signal(signal.SIGUSR1, previous)
    for p in procs:
        p.kill()
        p.wait()


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]  # R, S, T (stopped), Z, ...


@pytest.mark.parametrize("attack", SIGNALS)
def test_signals_cannot_reach_the_scorer_or_the_host(isolated, victims, marker, attack):
    (kill_me, stop_me), received = victims
    targets = [(os.getpid(), int(signal.SIGUSR1)), (kill_me.pid, int(signal.SIGKILL)),
               (stop_me.pid, int(signal.SIGSTOP)), (os.getppid(), int(signal.SIGUSR1))]
    result = run_python(hostile(SIGNALS[attack], targets=targets, marker=marker), timeout_s=5)
    time.sleep(0.2)  # let a signal that did get through arrive
    assert not result.passed
    assert received == []
    assert kill_me.poll() is None and stop_me.poll() is None
    assert _state(kill_me.pid) != "T" and _state(stop_me.pid) != "T"


# 3. Processes that detach (own session or group, double fork) to outlive the scorer.
SURVIVORS = {
    "setsid + double fork via ctypes": "import ctypes, time\nlibc = ctypes.CDLL(None)\nif libc.fork() == 0:\n"
                                       "    libc.setsid()\n    if libc.fork() == 0:\n"
                                       "        argv = (ctypes.c_char_p * 3)(b'sleep', {marker}.encode(), None)\n"
                                       "        libc.execvp(b'sleep', argv)\n    libc._exit(0)\ntime.sleep(0.5)",
    "fork + setsid of a fresh posix module": FRESH_POSIX + "import time\nif posix.fork() == 0:\n    posix.setsid()\n"
                                             "    posix.execv('/bin/sleep', ['sleep', {marker}])\ntime.sleep(0.5)",
    "own process group via ctypes setpgid": "import ctypes, time\nlibc = ctypes.CDLL(None)\nif libc.fork() == 0:\n"
                                            "    libc.setpgid(0, 0)\n"
                                            "    argv = (ctypes.c_char_p * 3)(b'sleep', {marker}.encode(), None)\n"
                                            "    libc.execvp(b'sleep', argv)\ntime.sleep(0.5)",
    "libc daemon()": "import ctypes, os\nlibc = ctypes.CDLL(None)\nif libc.daemon(0, 0) == 0:\n"
                     "    argv = (ctypes.c_char_p * 3)(b'sleep', {marker}.encode(), None)\n"
                     "    libc.execvp(b'sleep', argv)",
    "child left behind by an early exit": FRESH_POSIX + "import os\nif posix.fork() == 0:\n"
                                          "    posix.execv('/bin/sleep', ['sleep', {marker}])\nos._exit(0)",
}


@pytest.mark.parametrize("attack", SURVIVORS)
def test_no_process_outlives_the_program(isolated, marker, attack):
    result = run_python(hostile(SURVIVORS[attack], marker=marker), timeout_s=5)
    assert not result.passed
    assert processes_with(marker) == []


# 4. Writes outside the sandbox directory through the guard's captured originals, libc, sqlite3.
WRITES = {
    "closure of the guarded open": "import builtins\nfor cell in builtins.open.__closure__:\n"
                                   "    f = cell.cell_contents\n    if getattr(f, '__name__', '') == 'open':\n"
                                   "        f({victim}, 'w').write('pwned')\n        f({new}, 'w').write('pwned')",
    "original FileIO through __mro__": "import _io\nreal = _io.FileIO.__mro__[1]\n"
                                       "real({victim}, 'w').write(b'pwned')\nreal({new}, 'w').write(b'pwned')",
    "gc.get_referents of os.open": "import gc, os\nfor ref in gc.get_referents(os.open):\n"
                                   "    for cell in ref if isinstance(ref, tuple) else ():\n"
                                   "        f = cell.cell_contents\n"
                                   "        if getattr(f, '__name__', '') == 'open' and not hasattr(f, '__code__'):\n"
                                   "            os.write(f({victim}, os.O_WRONLY | os.O_TRUNC), b'pwned')\n"
                                   "            os.write(f({new}, os.O_WRONLY | os.O_CREAT, 0o644), b'pwned')",
    "a fresh posix module": FRESH_POSIX + "import os\n"
                                          "posix.write(posix.open({victim}, os.O_WRONLY | os.O_TRUNC), b'pw')\n"
                                          "posix.write(posix.open({new}, os.O_WRONLY | os.O_CREAT), b'pw')",
    "unlink through a fresh posix module": FRESH_POSIX + "posix.unlink({victim})",
    "ctypes libc": "import ctypes, os\nlibc = ctypes.CDLL(None)\n"
                   "libc.write(libc.open({victim}.encode(), os.O_WRONLY | os.O_TRUNC), b'pwned', 5)\n"
                   "libc.close(libc.creat({new}.encode(), 0o644))\nlibc.truncate({victim}.encode(), 0)",
    "sqlite3 creates a database elsewhere": "import sqlite3\nfor path in ({db}, {tmp_db}):\n"
                                            "    try:\n        c = sqlite3.connect(path)\n"
                                            "        c.execute('CREATE TABLE t (x)')\n        c.commit()\n"
                                            "    except sqlite3.Error:\n        pass",
    "the interpreter's read-only prefix": "import _io, sys\n_io.FileIO.__mro__[1]({in_prefix}, 'w').write(b'pwned')",
}


@pytest.mark.parametrize("attack", WRITES)
def test_host_files_are_unchanged(isolated, tmp_path, marker, attack):
    victim, new, db = tmp_path / "keep.txt", tmp_path / "new.txt", tmp_path / "new.db"
    tmp_db, in_prefix = f"/tmp/sandbox-hostile-{marker}.db", os.path.join(sys.prefix, f"pwned-{marker}")
    victim.write_text("precious")
    try:
        result = run_python(hostile(WRITES[attack], victim=str(victim), new=str(new), db=str(db), tmp_db=tmp_db,
                                    in_prefix=in_prefix), timeout_s=5)
        assert not result.passed
        assert victim.read_text() == "precious"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
        assert not os.path.exists(tmp_db) and not os.path.exists(in_prefix)
    finally:
        for path in (tmp_db, in_prefix):
            if os.path.exists(path):
                os.remove(path)


# 5. Network: TCP/UDP to loopback listeners, Unix sockets at a host path and in the abstract namespace.
RAW = "import _socket\nraw = _socket.socket.__mro__[1]\nAF_INET, AF_UNIX = _socket.AF_INET, _socket.AF_UNIX\n"
NETWORK = {
    "TCP to a loopback listener": RAW + "raw(AF_INET, _socket.SOCK_STREAM).connect(('127.0.0.1', {tcp_port}))",
    "UDP to a loopback listener": RAW + "raw(AF_INET, _socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', {udp_port}))",
    "Unix socket at a host path": RAW + "raw(AF_UNIX, _socket.SOCK_STREAM).connect({unix_path})",
    "abstract Unix socket": RAW + "raw(AF_UNIX, _socket.SOCK_STREAM).connect({abstract})",
    "TCP through ctypes": "import ctypes, struct\nlibc = ctypes.CDLL(None)\ns = libc.socket(2, 1, 0)\n"
                          "addr = struct.pack('=H', 2) + struct.pack('>H', {tcp_port}) + bytes([127, 0, 0, 1])\n"
                          "addr += bytes(8)\n"
                          "assert libc.connect(s, addr, len(addr)) == 0, 'connect failed'",
}


@pytest.fixture
def listeners(marker):
    """Listening sockets on the host; {name: (socket, address)}."""
    short_dir = tempfile.mkdtemp(prefix="sbx-")  # AF_UNIX paths are limited to 108 bytes
    tcp = socket.create_server(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(os.path.join(short_dir, "s.sock"))
    unix.listen()
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind(f"\0sandbox-hostile-{marker}")
    abstract.listen()
    socks = {"tcp": tcp, "udp": udp, "unix": unix, "abstract": abstract}
    yield socks
    for s in socks.values():
        s.close()
    os.remove(os.path.join(short_dir, "s.sock"))
    os.rmdir(short_dir)


def _got_anything(sock: socket.socket) -> bool:
    sock.settimeout(0.2)
    try:
        if sock.type == socket.SOCK_DGRAM:
            sock.recvfrom(16)
        else:
            sock.accept()[0].close()
        return True
    except (TimeoutError, BlockingIOError):
        return False


@pytest.mark.parametrize("attack", NETWORK)
def test_no_network_and_no_host_sockets(isolated, listeners, attack):
    program = hostile(NETWORK[attack], tcp_port=listeners["tcp"].getsockname()[1],
                      udp_port=listeners["udp"].getsockname()[1], unix_path=listeners["unix"].getsockname(),
                      abstract=listeners["abstract"].getsockname())
    result = run_python(program, timeout_s=5)
    assert not result.passed
    assert {name: _got_anything(s) for name, s in listeners.items()} == dict.fromkeys(listeners, False)
