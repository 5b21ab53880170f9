"""Run untrusted model-generated Python (e.g. a HumanEval completion plus its tests) in a locked-down child.

    result = run_python(program_source, timeout_s=10, memory_mb=1024)
    result.passed, result.status, result.detail   # status: passed | failed | timeout | memory
Layers: user+network namespace (when `unshare` works), rlimits, a throw-away cwd, a process-group kill,
and an in-process guard. The guard stops accidents and naive attacks, not a determined adversary.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

FSIZE_BYTES = 16 * 2**20  # largest file the program may write
NPROC = 16  # processes+threads; the kernel never enforces it when the real uid is root, even in a userns
DETAIL_CHARS = 500
UNSHARE = ["unshare", "--user", "--map-root-user", "--net"]

# Runs in the child as `python -I -c BOOTSTRAP program.py AS_BYTES CPU_S FSIZE NPROC`: limits first,
# then the guard, then the program as __main__. An uncaught exception prints a traceback and exits 1.
BOOTSTRAP = r'''
import builtins, io, os, resource, sys
path, mem, cpu, fsize, nproc = sys.argv[1], *map(int, sys.argv[2:6])
for res, soft, hard in [(resource.RLIMIT_AS, mem, mem), (resource.RLIMIT_CPU, cpu, cpu + 1),
                        (resource.RLIMIT_FSIZE, fsize, fsize), (resource.RLIMIT_NPROC, nproc, nproc),
                        (resource.RLIMIT_CORE, 0, 0)]:
    resource.setrlimit(res, (soft, hard))
with open(path) as f:
    code = compile(f.read(), path, "exec")

import _io, _posixsubprocess, _socket, posix, shutil, socket, subprocess
ROOT = os.path.realpath(os.getcwd())

def deny(name):
    def denied(*args, **kwargs):
        raise PermissionError(f"{name} is disabled in sandbox")
    return denied

def check_writable(file, dir_fd=None):
    """Raise unless `file` resolves (symlinks included) to a path inside ROOT."""
    if file is None or isinstance(file, int):  # None: the call fails anyway; int: an already-open descriptor
        return
    file = os.fsdecode(file)
    if dir_fd is not None:  # relative to an open directory: resolve that directory through /proc
        file = os.path.join(f"/proc/self/fd/{dir_fd}", file)
    real = os.path.realpath(file)
    if real != os.devnull and os.path.commonpath([real, ROOT]) != ROOT:
        raise PermissionError(f"writing outside the sandbox directory is disabled in sandbox: {file!r}")

def path_checked(func, n_paths=1):
    """Wrap an os function whose first n_paths arguments are paths (rename: src, dst) it modifies."""
    keys = [(("path", "src"), ("dir_fd", "src_dir_fd")), (("dst",), ("dst_dir_fd",))][:n_paths]
    def checked(*args, **kwargs):
        for i, (path_keys, fd_keys) in enumerate(keys):
            path = args[i] if i < len(args) else next((kwargs[k] for k in path_keys if k in kwargs), None)
            check_writable(path, next((kwargs[k] for k in fd_keys if kwargs.get(k) is not None), None))
        return func(*args, **kwargs)
    return checked

real_open, real_os_open = builtins.open, os.open
def guarded_open(file, mode="r", *args, **kwargs):
    if any(c in mode for c in "wax+"):
        check_writable(file)
    return real_open(file, mode, *args, **kwargs)

class GuardedFileIO(_io.FileIO):
    def __init__(self, file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            check_writable(file)
        super().__init__(file, mode, *args, **kwargs)

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
def guarded_os_open(file, flags, *args, **kwargs):
    if flags & WRITE_FLAGS:
        check_writable(file, kwargs.get("dir_fd"))
    return real_os_open(file, flags, *args, **kwargs)

# `posix` is patched too, so `import posix` and importlib.reload(os) see the same stubs. Python-level
# helpers (os.removedirs, os.renames, shutil.rmtree, shutil.move, tempfile) go through these.
for mod in (os, posix):
    for name in """fork forkpty system popen kill killpg putenv unsetenv fchmod lchmod chown fchown lchown
            chroot chdir fchdir link symlink mkfifo mknod setuid seteuid setgid setegid setreuid setregid
            setresuid setresgid setsid setpgid setpgrp execv execve execl execle execlp execlpe execvp
            execvpe posix_spawn posix_spawnp spawnl spawnle spawnlp spawnlpe spawnv spawnve spawnvp
            spawnvpe""".split():
        if hasattr(mod, name):
            setattr(mod, name, deny(f"os.{name}"))
    for name, n_paths in [("remove", 1), ("unlink", 1), ("rmdir", 1), ("mkdir", 1), ("truncate", 1),
                          ("chmod", 1), ("rename", 2), ("replace", 2)]:
        setattr(mod, name, path_checked(getattr(mod, name), n_paths))
    mod.open = guarded_os_open
builtins.open = io.open = _io.open = guarded_open
io.FileIO = _io.FileIO = GuardedFileIO
for mod, names in [(shutil, "chown"), (subprocess, "Popen"), (_posixsubprocess, "fork_exec"),
                   (socket, "socketpair fromfd create_connection create_server"), (_socket, "socketpair")]:
    for name in names.split():
        setattr(mod, name, deny(f"{mod.__name__}.{name}"))
# Socket classes stay classes (ssl and asyncio subclass them at import) but cannot be instantiated.
class DeniedSocket(_socket.socket):
    __init__ = deny("socket.socket")
class DeniedPySocket(socket.socket):
    __init__ = deny("socket.socket")
_socket.socket = _socket.SocketType = socket.SocketType = DeniedSocket
socket.socket = DeniedPySocket
del deny, mod, name, names, n_paths, res, soft, hard, f

exec(code, {"__name__": "__main__", "__builtins__": builtins, "__file__": path})
'''


@dataclass(frozen=True)
class SandboxResult:
    status: str  # "passed" | "failed" | "timeout" | "memory" (MemoryError, or killed for memory)
    detail: str  # last lines of stderr, or the reason; at most DETAIL_CHARS characters

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.lru_cache(maxsize=1)
def namespace_available() -> bool:
    """Whether `unshare --user --map-root-user --net` can start Python here (probed once)."""
    if shutil.which("unshare") is None:
        return False
    try:
        probe = subprocess.run([*UNSHARE, sys.executable, "-I", "-c", "pass"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if probe.returncode != 0:
        log.warning("unshare unavailable (%s); sandbox runs without namespaces", probe.stderr.decode().strip())
    return probe.returncode == 0


def run_python(program: str, timeout_s: float = 10.0, memory_mb: int = 1024, *,
               isolate: bool | None = None) -> SandboxResult:
    """Run `program` in a sandboxed child process. isolate: True = require the namespace, False = never use
    it, None = use it when available. Exit code 0 is "passed"."""
    if isolate is None:
        isolate = namespace_available()
    elif isolate and not namespace_available():
        raise RuntimeError("isolate=True but user/network namespaces (unshare) are not available")
    with tempfile.TemporaryDirectory(prefix="sandbox-") as workdir, tempfile.TemporaryFile() as stderr:
        path = os.path.join(workdir, "program.py")
        with open(path, "w") as f:
            f.write(program)
        cpu_s = math.ceil(timeout_s) + 1  # RLIMIT_CPU only backs up the wall-clock limit
        cmd = [*(UNSHARE if isolate else []), sys.executable, "-I", "-c", BOOTSTRAP,
               path, str(memory_mb * 2**20), str(cpu_s), str(FSIZE_BYTES), str(NPROC)]
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=stderr, start_new_session=True)
        try:
            finished = _wait_unreaped(proc.pid, timeout_s)
        finally:
            with contextlib.suppress(ProcessLookupError):  # also kills whatever the program left in its group
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        stderr.seek(max(0, os.fstat(stderr.fileno()).st_size - 4 * DETAIL_CHARS))
        tail = stderr.read().decode(errors="replace").strip()[-DETAIL_CHARS:]
    return _classify(finished, proc.returncode, tail, timeout_s)


def _wait_unreaped(pid: int, timeout_s: float) -> bool:
    """Wait up to timeout_s for pid to exit, without reaping it: while it is a zombie its pid (= our pgid)
    cannot be reused, so the killpg that follows can only hit the sandboxed group."""
    deadline, delay = time.monotonic() + timeout_s, 0.001
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(2 * delay, 0.05)
    return False


def _classify(finished: bool, returncode: int, tail: str, timeout_s: float) -> SandboxResult:
    if not finished:
        return SandboxResult("timeout", f"no exit after {timeout_s:g} s wall clock")
    if returncode == 0:
        return SandboxResult("passed", tail)
    if returncode == -signal.SIGXCPU:
        return SandboxResult("timeout", "CPU time limit exceeded")
    if returncode == -signal.SIGKILL:  # not our kill (that happens only after the exit): the OOM killer
        return SandboxResult("memory", tail or "killed by SIGKILL (out of memory?)")
    last_line = tail.splitlines()[-1] if tail else ""
    if last_line.startswith("MemoryError"):
        return SandboxResult("memory", tail)
    if returncode < 0:
        return SandboxResult("failed", tail or f"killed by signal {-returncode}")
    return SandboxResult("failed", tail or f"exit code {returncode}")
