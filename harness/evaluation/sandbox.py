"""Run untrusted model output (a HumanEval program, a Spider query) in a child isolated by the operating system.

    result = run_python(program_source, timeout_s=10, memory_mb=1024)
    result.passed, result.status, result.detail   # status: passed | failed | timeout | memory
    isolation_report()   # {"tool": "bwrap", "isolated": True, ...}: what protects the host here (in run.json)
Layers (docs/sandbox.md): bubblewrap namespaces (PID, mount, network, IPC, UTS) over a read-only view of the
interpreter with a private size-limited tmpfs as the only writable place, a fresh unprivileged uid per child,
rlimits, a wall-clock kill of the whole PID namespace, then the in-process guard of harness/evaluation/sandbox_child.py.
A program passes only when its last statement returned (the child then prints a nonce the program never sees).
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import resource
import secrets
import select
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness import HarnessError

log = logging.getLogger(__name__)

FSIZE_BYTES = 16 * 2**20  # largest file (stdout included) the child may write
TMPFS_BYTES = 64 * 2**20  # size of the child's writable directory (isolated mode)
NPROC = 16  # processes+threads of the child's uid: each child gets its own uid, so this is per child
DETAIL_CHARS = 500
GRACE_S = 1.0  # start-up allowance on top of a trusted child's own time limit (run_child)
NAMESPACES = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
SYSTEM_PATHS = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache"]
CHILD_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
# Prepended to every child's code: limits first (they then hold for everything the child does), and the
# interpreter's site-packages without running their .pth files (`python -S`: fast start, no editable hooks).
PRELUDE = """import resource, sys
for _res, _soft, _hard in {limits!r}:
    resource.setrlimit(_res, (_soft, _hard))
sys.path.extend({site!r})
del _res, _soft, _hard
"""


class SandboxUnavailable(HarnessError):
    """Isolation was required (--require-sandbox) but the operating system sandbox cannot run here."""


@dataclass(frozen=True)
class SandboxResult:
    status: str  # "passed" | "failed" | "timeout" | "memory" (MemoryError, or killed for memory)
    detail: str  # last lines of stderr, or the reason; at most DETAIL_CHARS characters

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class ChildResult:
    finished: bool  # exited before the wall-clock limit
    returncode: int  # bwrap reports death by signal N as 128 + N; without bwrap it is -N
    stdout: bytes  # at most max_stdout bytes (the tail when tail_only)
    stderr_tail: str  # at most DETAIL_CHARS characters


def _bind_sources() -> list[str]:
    """Host paths the child sees read-only: the system's libraries and this interpreter's prefixes."""
    exe_dir = os.path.dirname(os.path.realpath(sys.executable))
    paths = [p for p in SYSTEM_PATHS if os.path.lexists(p)]
    paths += [os.path.abspath(p) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                                            os.path.dirname(os.path.abspath(sys.executable)), exe_dir}]
    paths = sorted(set(paths))
    return [p for p in paths if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in paths)]


def _bwrap_argv(workdir: str, read_only: list[str], uid: int) -> list[str]:
    """bwrap ... -- [setpriv ...]: fresh namespaces, read-only binds, a tmpfs at workdir, an unprivileged uid."""
    argv = [shutil.which("bwrap") or "bwrap", *NAMESPACES, "--die-with-parent", "--new-session"]
    binds = [*_bind_sources(), *read_only]
    parents = {str(d) for path in [*binds, workdir] for d in Path(path).parents if str(d) != "/"}
    for d in sorted(parents):  # bwrap would create them 0700, closed to the unprivileged uid
        argv += ["--perms", "0755", "--dir", d]
    for path in binds:
        if os.path.islink(path) and path in SYSTEM_PATHS:  # /bin -> usr/bin on merged-/usr systems
            argv += ["--symlink", os.readlink(path), path]
        else:
            argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(TMPFS_BYTES), "--tmpfs", workdir,
             "--chdir", workdir]
    if os.geteuid() == 0:  # root: bwrap mounts, then setpriv drops to a host uid nobody else uses
        return argv + ["--", "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
                       "--bounding-set=-all", "--no-new-privs"]
    return argv + ["--unshare-user", "--disable-userns", "--"]  # already unprivileged: a user namespace


@functools.lru_cache(maxsize=1)
def isolation_report() -> dict:
    """What isolates untrusted code on this machine, probed once per process. The first untrusted program
    run without isolation logs a warning."""
    report = {"tool": None, "version": None, "isolated": False, "pid_namespace": False, "net_namespace": False,
              "mount_namespace": False, "unprivileged_uid": False, "writable": "a temporary directory",
              "rlimits": True, "in_process_guard": True, "reason": None}
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        report["reason"] = "bwrap (bubblewrap) not found: apt-get install bubblewrap"
    else:
        report.update(tool="bwrap", version=_bwrap_version(bwrap))
        probe = ("import json, os\nprint(json.dumps({'pid': os.getpid(), 'uid': os.getuid(), "
                 "'net': os.readlink('/proc/self/ns/net'), 'mnt': os.readlink('/proc/self/ns/mnt')}))")
        try:
            out = _spawn(probe, [], b"", 10.0, 256, isolated=True)
            seen = json.loads(out.stdout) if out.finished and out.returncode == 0 else None
        except (OSError, ValueError):
            out, seen = None, None
        if seen is None:
            reason = out.stderr_tail.strip() if out else "could not start"
            report["reason"] = f"bwrap cannot create the sandbox here: {reason or 'exit code ' + str(out.returncode)}"
        else:
            report.update(pid_namespace=seen["pid"] < 10, net_namespace=seen["net"] != os.readlink("/proc/self/ns/net"),
                          mount_namespace=seen["mnt"] != os.readlink("/proc/self/ns/mnt"),
                          unprivileged_uid=seen["uid"] != 0,
                          writable=f"a private tmpfs of {TMPFS_BYTES // 2**20} MiB")
            report["isolated"] = all(report[k] for k in ("pid_namespace", "net_namespace", "mount_namespace",
                                                          "unprivileged_uid"))
            if not report["isolated"]:
                report["reason"] = f"bwrap ran but did not isolate: {seen}"
    return report


def _bwrap_version(bwrap: str) -> str | None:
    try:
        return subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10).stdout.split()[-1]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return None


def require_isolation() -> dict:
    """The isolation report; SandboxUnavailable when untrusted code would run without OS isolation."""
    report = isolation_report()
    if not report["isolated"]:
        raise SandboxUnavailable(f"untrusted code would run without operating-system isolation ({report['reason']}); "
                                 "install bubblewrap or run without --require-sandbox")
    return report


def _use_isolation(isolate: bool, require: bool) -> bool:
    if require:
        require_isolation()
    report = isolation_report()
    if isolate and not report["isolated"]:
        _warn_once(report["reason"])
    return isolate and report["isolated"]


@functools.lru_cache(maxsize=1)
def _warn_once(reason: str) -> None:
    log.warning("sandbox: no operating-system isolation (%s); untrusted code runs with rlimits and the "
                "in-process guard only, which a hostile program can get past", reason)


def _spawn(code: str, args: list[str], stdin: bytes, timeout_s: float, memory_mb: int, *, isolated: bool,
           read_only: list[str] = (), max_stdout: int = FSIZE_BYTES, tail_only: bool = False,
           cpu_s: int | None = None) -> ChildResult:
    """Run `python -I -S -c PRELUDE+code args` with stdin from a file, stdout/stderr to files, rlimits, and
    SIGKILL to the whole process group (isolated: the whole PID namespace) at timeout_s or when it exits."""
    cpu_s = cpu_s or math.ceil(timeout_s) + 1  # RLIMIT_CPU only backs up the wall-clock limit
    fsize = max(FSIZE_BYTES, max_stdout)
    limits = [(resource.RLIMIT_AS, memory_mb * 2**20, memory_mb * 2**20), (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),
              (resource.RLIMIT_FSIZE, fsize, fsize), (resource.RLIMIT_NPROC, NPROC, NPROC),
              (resource.RLIMIT_CORE, 0, 0)]
    source = PRELUDE.format(limits=limits, site=[p for p in site.getsitepackages() if os.path.isdir(p)]) + code
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="sandbox-"))
        files = [stack.enter_context(tempfile.TemporaryFile()) for _ in range(3)]  # stdin, stdout, stderr
        files[0].write(stdin)
        files[0].seek(0)
        uid = 200_000 + secrets.randbelow(2**30)
        prefix = _bwrap_argv(workdir, list(read_only), uid) if isolated else []
        env = {**CHILD_ENV, "HOME": workdir, "TMPDIR": workdir}
        proc = subprocess.Popen([*prefix, sys.executable, "-I", "-S", "-c", source, *args], cwd=workdir, env=env,
                                stdin=files[0], stdout=files[1], stderr=files[2], start_new_session=True)
        try:
            finished = _wait_unreaped(proc.pid, timeout_s)
        finally:
            with contextlib.suppress(ProcessLookupError):  # bwrap's --die-with-parent then ends the namespace
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out = files[1]
        size = os.fstat(out.fileno()).st_size
        out.seek(max(0, size - max_stdout) if tail_only else 0)
        stdout = out.read(max_stdout)
        files[2].seek(max(0, os.fstat(files[2].fileno()).st_size - 4 * DETAIL_CHARS))
        tail = files[2].read().decode(errors="replace").strip()[-DETAIL_CHARS:]
    return ChildResult(finished, proc.returncode, stdout, tail)


def run_child(code: str, args: list[str], stdin: bytes, timeout_s: float, memory_mb: int = 1024, *,
              read_only: list[str] = (), max_stdout: int = FSIZE_BYTES, isolate: bool = True,
              require_isolation: bool = False) -> ChildResult:
    """Run trusted `code` that handles untrusted input (e.g. a Spider query on stdin) in the sandbox, where
    the host paths `read_only` are visible (read-only, at the same place). The child should end itself by
    timeout_s; it is killed GRACE_S later."""
    isolated = _use_isolation(isolate, require_isolation)
    return _spawn(code, args, stdin, timeout_s + GRACE_S, memory_mb, isolated=isolated, max_stdout=max_stdout,
                  read_only=[os.path.abspath(p) for p in read_only], cpu_s=math.ceil(timeout_s) + 1)


@functools.lru_cache(maxsize=1)
def _child_source() -> str:
    return Path(__file__).with_name("sandbox_child.py").read_text(encoding="utf-8")


def run_python(program: str, timeout_s: float = 10.0, memory_mb: int = 1024, *, isolate: bool = True,
               require_isolation: bool = False) -> SandboxResult:
    """Run `program` in the sandbox. It passes when it ran to its last statement without an exception (an
    early exit, by any route, fails). isolate=False skips the OS layer (to test the in-process guard alone);
    require_isolation=True raises SandboxUnavailable where the OS layer cannot run."""
    isolated = _use_isolation(isolate, require_isolation)
    nonce = secrets.token_hex(16).encode()
    result = _spawn(_child_source(), [], nonce + b"\n" + program.encode(errors="surrogatepass"), timeout_s,
                    memory_mb, isolated=isolated, max_stdout=len(nonce) + 1, tail_only=True)
    return _classify(result, nonce, timeout_s)


def _wait_unreaped(pid: int, timeout_s: float) -> bool:
    """Wait up to timeout_s for pid to exit, without reaping it: while it is a zombie its pid (= our pgid)
    cannot be reused, so the killpg that follows can only hit the sandboxed group."""
    with contextlib.suppress(AttributeError, OSError):  # a pidfd turns readable at the exit (Linux >= 5.3)
        fd = os.pidfd_open(pid)
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(max(0, math.ceil(timeout_s * 1000))))
        finally:
            os.close(fd)
    deadline, delay = time.monotonic() + timeout_s, 0.001
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(2 * delay, 0.05)
    return False


def _signal_of(returncode: int) -> int | None:
    if returncode < 0:
        return -returncode
    return returncode - 128 if 128 < returncode < 128 + 65 else None


def _classify(result: ChildResult, nonce: bytes, timeout_s: float) -> SandboxResult:
    tail = result.stderr_tail
    if not result.finished:
        return SandboxResult("timeout", f"no exit after {timeout_s:g} s wall clock")
    if result.returncode == 0 and result.stdout == b"\n" + nonce:
        return SandboxResult("passed", tail)
    sig = _signal_of(result.returncode)
    if sig == signal.SIGXCPU:
        return SandboxResult("timeout", "CPU time limit exceeded")
    if sig == signal.SIGKILL:  # not our kill (that happens only after the exit): the OOM killer
        return SandboxResult("memory", tail or "killed by SIGKILL (out of memory?)")
    last_line = tail.splitlines()[-1] if tail else ""
    if last_line.startswith("MemoryError"):
        return SandboxResult("memory", tail)
    if result.returncode == 0:
        return SandboxResult("failed", (tail + "\n" if tail else "") + "exited before its last statement returned")
    if sig is not None:
        return SandboxResult("failed", tail or f"killed by signal {sig}")
    return SandboxResult("failed", tail or f"exit code {result.returncode}")
