"""An emulated ARM board for tests: an arm64 Debian root run under qemu-user, serving TVM RPC on loopback.

    python -m labnas.tvm.arm_emulator build [--root DIR]          # debootstrap + the aarch64 TVM wheel
    python -m labnas.tvm.arm_emulator serve --port 9090 [--root DIR]

``build`` needs Debian's ``debootstrap`` and ``qemu-user-static`` (``apt-get install debootstrap
qemu-user-static``) and reaches only Debian's archive and PyPI. ``serve`` starts
``tvm.exec.rpc_server`` with the board's own aarch64 Python, under ``qemu-aarch64-static``, bound to
127.0.0.1. Then ``labnas profile --target arm --rpc 127.0.0.1:9090 --emulated`` runs end to end: the
cross-compiled model is uploaded, run and checked against PyTorch on emulated AArch64.

The numbers it gives are qemu's, **not ARM performance**; labnas labels them ``emulated``.

One qemu-only workaround: the RPC server starts ``sys.executable -m tvm.exec.popen_worker``, which
fails with "Exec format error" on a machine without binfmt_misc. The launcher points
``sys.executable`` at a shell wrapper that re-enters qemu. A real board needs none of this.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from .._tools import find_tool

__all__ = ["DEFAULT_ROOT", "build_root", "server_command", "main"]

DEFAULT_ROOT = Path(os.environ.get("LABNAS_ARM64_ROOT", Path.home() / ".cache" / "labnas" / "arm64root"))
SUITE = "bookworm"  # Python 3.11, glibc 2.36 (the aarch64 TVM wheel needs glibc >= 2.28)
MIRROR = "http://deb.debian.org/debian"
WHEELS = ("apache-tvm", "numpy", "ml_dtypes", "psutil", "cloudpickle", "tornado", "typing_extensions")
QEMU = "qemu-aarch64-static"

def _need(tool: str, package: str) -> str:
    return find_tool(tool, package, SystemExit, "arm_emulator")


def site_dir(root: Path) -> Path:
    return root / "opt" / "labnas-site"


def build_root(root: Path = DEFAULT_ROOT, verbose: bool = False) -> Path:
    """Create the arm64 root (idempotent: a finished root is reused)."""
    done = root / ".labnas-ready"
    if done.exists():
        return root
    debootstrap = _need("debootstrap", "debootstrap")
    _need(QEMU, "qemu-user-static")
    root.mkdir(parents=True, exist_ok=True)
    out = None if verbose else subprocess.DEVNULL
    # First stage only (no chroot needed), then unpack every downloaded .deb: enough for python3 under qemu.
    subprocess.run(
        [debootstrap, "--foreign", "--arch=arm64", "--variant=minbase", "--include=python3,python3-minimal,libpython3.11-stdlib",
         SUITE, str(root), MIRROR],
        check=True, stdout=out, stderr=out,
    )
    for deb in sorted((root / "var" / "cache" / "apt" / "archives").glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, stdout=out, stderr=out)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--platform", "manylinux_2_28_aarch64", "--only-binary=:all:",
         "--python-version", "3.11", "--implementation", "cp", "--target", str(site_dir(root)), *WHEELS],
        check=True, stdout=out, stderr=out,
    )
    done.write_text("ok\n")
    return root


def _python(root: Path) -> list[str]:
    return [_need(QEMU, "qemu-user-static"), "-L", str(root), str(root / "usr" / "bin" / "python3.11")]


def server_command(root: Path, port: int, host: str = "127.0.0.1") -> tuple[list[str], dict[str, str]]:
    """The command and environment that start the emulated board's RPC server."""
    wrapper = root / "opt" / "python-wrapper.sh"
    wrapper.write_text("#!/bin/sh\nexec " + " ".join(_python(root)) + ' "$@"\n')
    wrapper.chmod(0o755)
    env = {
        **os.environ,
        "PYTHONPATH": str(site_dir(root)),
        "LABNAS_ARM_PYTHON_WRAPPER": str(wrapper),
        "PYTHONNOUSERSITE": "1",
    }
    launcher = root / "opt" / "labnas_rpc_launcher.py"
    launcher.write_text(
        "import os, runpy, sys\n"
        "sys.executable = os.environ['LABNAS_ARM_PYTHON_WRAPPER']\n"
        "sys.argv = ['tvm.exec.rpc_server'] + sys.argv[1:]\n"
        "runpy.run_module('tvm.exec.rpc_server', run_name='__main__')\n"
    )
    cmd = [*_python(root), str(launcher), "--host", host, "--port", str(port), "--port-end", str(port + 1)]
    return cmd, env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labnas.tvm.arm_emulator", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="create the arm64 root with the aarch64 TVM wheel")
    b.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    s = sub.add_parser("serve", help="start the TVM RPC server under qemu on 127.0.0.1")
    s.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    s.add_argument("--port", type=int, default=9090)
    args = parser.parse_args(argv)
    root = build_root(args.root, verbose=True)
    if args.cmd == "build":
        print(f"arm64 root ready at {root}")
        return 0
    cmd, env = server_command(root, args.port)
    print(f"emulated ARM board (qemu) serving TVM RPC on 127.0.0.1:{args.port}; Ctrl-C stops it", flush=True)
    return subprocess.call(cmd, env=env)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
