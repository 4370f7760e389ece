"""Run a program (an assistant's code and a task's tests) in a child Python with limits.

What the child gets: a fresh temporary folder as its working directory, HOME and TMPDIR,
deleted afterwards; an isolated interpreter (`python -I -B -u`: no user site, no PYTHONPATH,
no bytecode written, unbuffered); limits set by the child itself before the program runs
(`resource.setrlimit`: address space, CPU seconds, file size, no core files); a wall-clock
limit after which its whole process group is killed; and an audit hook (PEP 578,
`sys.addaudithook`) that refuses, with PermissionError, every file write, removal, rename
or folder made outside its folder, every socket connection, bind or name lookup, and
every new process (subprocess, os.system, fork, exec).

What it does not stop: this is a guard against mistakes of an honest model (a runaway
loop, a test that writes a file, an accidental download), not a security boundary. Audit
hooks are documented as no sandbox: code that loads native code (ctypes, a C extension)
bypasses them, and the child runs as the same user with the same file permissions
otherwise. Run the code of an untrusted model in a container or a VM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

PROGRAM = "program.py"
OUTPUT_CHARS = 2000

# Runs in the child before the program: its limits, then the audit hook, then the program.
RUNNER = r"""
import os, resource, sys
memory, seconds, file_bytes = (int(v) for v in sys.argv[1:4])
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds))
resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
ROOT = os.path.realpath(os.getcwd())
with open("program.py", encoding="utf-8") as stream:
    source = stream.read()
WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
PATH_EVENTS = {"os.remove", "os.rmdir", "os.mkdir", "os.rename", "os.chmod", "os.chown", "os.link", "os.symlink",
               "os.truncate", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move", "os.chdir"}
REFUSED = {"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
           "socket.gethostbyname", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
           "os.fork", "os.forkpty", "pty.spawn", "os.kill", "os.killpg"}

def inside(path):
    real = os.path.realpath(os.path.join(ROOT, os.fsdecode(path)))
    return real == ROOT or real.startswith(ROOT + os.sep)

def guard(event, args):
    if event == "open":
        path, mode, flags = args
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & WRITES)
        if writes and isinstance(path, (str, bytes, os.PathLike)) and not inside(path):
            raise PermissionError(f"the sandbox refuses writing outside its folder: {path}")
    elif event in PATH_EVENTS:
        for arg in args:
            if isinstance(arg, (str, bytes, os.PathLike)) and not inside(arg):
                raise PermissionError(f"the sandbox refuses {event} outside its folder: {arg}")
    elif event in REFUSED:
        raise PermissionError(f"the sandbox refuses {event}")

sys.addaudithook(guard)
exec(compile(source, "program.py", "exec"), {"__name__": "__main__"})
"""


@dataclass
class RunResult:
    """How a program ended: "passed" (exit 0), "failed" (an exception or a failed assert) or "timed_out"."""

    status: str
    detail: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def run_program(program: str, *, time_limit: float = 10.0, memory_mb: int = 1024, file_mb: int = 16) -> RunResult:
    """Run `program` in a child Python under the limits above; never raises for what the program does."""
    with tempfile.TemporaryDirectory(prefix="userlm-sandbox-") as folder:
        Path(folder, PROGRAM).write_text(program, encoding="utf-8")
        limits = [str(memory_mb * 2**20), str(int(time_limit) + 1), str(file_mb * 2**20)]
        env = {"PATH": os.defpath, "HOME": folder, "TMPDIR": folder, "LANG": "C.UTF-8"}
        child = subprocess.Popen(
            # -u: the output keeps the order it was written in, so its last line is the error, not a late print.
            [sys.executable, "-I", "-B", "-u", "-c", RUNNER, *limits],
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a timeout kills whatever it started too
        )
        try:
            output, _ = child.communicate(timeout=time_limit)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            return RunResult("timed_out", f"still running after {time_limit:g} s")
        text = output.decode("utf-8", "replace").strip()
        if child.returncode == 0:
            return RunResult("passed", "")
        if child.returncode == -signal.SIGXCPU:
            return RunResult("timed_out", f"used more than {limits[1]} s of CPU")
        last = text.splitlines()[-1] if text else f"exit status {child.returncode}"
        return RunResult("failed", last[:OUTPUT_CHARS])
