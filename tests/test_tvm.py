"""TVM lowering: bit-exact binary kernels, whole networks against PyTorch, targets, RPC."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from labnas.models import FAMILIES, create_model, default_spec
from labnas.nn import BinaryConv2d
from labnas.timing import RemoteError, RemoteSpec, measure
from labnas.tvm import (
    TARGETS,
    LoweringError,
    TargetError,
    compile_model,
    import_model,
    resolve_target,
)
from labnas.tvm.packed import WORD_BITS, hwio, pack_weight_bits

HOST = TARGETS["host"]


def numpy_xnor_popcount(x: np.ndarray, w: np.ndarray, stride: int, padding: int, pad_value: int) -> np.ndarray:
    """Reference: pack sign bits in numpy, XOR, popcount (np.bitwise_count), K - 2 * pop.

    Zero padding is handled exactly by counting only the taps inside the image."""
    n, c, h, wd = x.shape
    cout, _, k, _ = w.shape
    words = -(-c // WORD_BITS)

    def pack(bits_chw_last: np.ndarray) -> np.ndarray:  # [..., C] bool -> [..., words] uint64
        padded = np.zeros(bits_chw_last.shape[:-1] + (words * WORD_BITS,), bool)
        padded[..., :c] = bits_chw_last
        b = padded.reshape(*padded.shape[:-1], words, WORD_BITS).astype(np.uint64)
        return (b << np.arange(WORD_BITS, dtype=np.uint64)).sum(-1, dtype=np.uint64)

    act = pack((x >= 0).transpose(0, 2, 3, 1))  # [n, h, w, words]
    pad_bits = pack(np.full((c,), pad_value == 1))  # [words]
    valid = np.ones((h, wd), bool)
    act_p = np.broadcast_to(pad_bits, (n, h + 2 * padding, wd + 2 * padding, words)).copy()
    act_p[:, padding : padding + h, padding : padding + wd] = act
    valid_p = np.zeros((h + 2 * padding, wd + 2 * padding), bool)
    valid_p[padding : padding + h, padding : padding + wd] = valid
    wp = pack((w >= 0).transpose(0, 2, 3, 1))  # [cout, k, k, words]
    ho, wo = (h + 2 * padding - k) // stride + 1, (wd + 2 * padding - k) // stride + 1
    out = np.zeros((n, cout, ho, wo), np.int64)
    for y in range(ho):
        for xx in range(wo):
            win = act_p[:, y * stride : y * stride + k, xx * stride : xx * stride + k]  # [n, k, k, words]
            mask = valid_p[y * stride : y * stride + k, xx * stride : xx * stride + k]
            pop = np.bitwise_count(win[:, None] ^ wp[None]).astype(np.int64)  # [n, cout, k, k, words]
            if pad_value == 0:
                taps = int(mask.sum()) * c
                pop = pop * mask[None, None, :, :, None]
            else:
                taps = k * k * c
            out[:, :, y, xx] = taps - 2 * pop.sum(axis=(2, 3, 4))
    return out


CASES = [(c, s, k) for c in (3, 63, 64, 65, 256) for s, k in ((1, 1), (1, 3), (2, 3), (1, 5), (2, 5), (2, 1))]
CASES += [(65, 1, 7), (3, 2, 7)]


@pytest.mark.parametrize("channels,stride,kernel", CASES)
def test_binary_kernel_is_bit_exact(channels, stride, kernel):
    rng = np.random.default_rng(channels * 100 + stride * 10 + kernel)
    pad_value = [0, 1, -1][(channels + kernel) % 3]
    conv = BinaryConv2d(channels, 24, kernel, stride, binarizer="ste_sign", pad_value=pad_value)
    conv.weight.data = torch.from_numpy(rng.standard_normal(conv.weight.shape).astype(np.float32))
    model = nn.Sequential(conv).eval()
    x = rng.standard_normal((1, channels, 9, 9)).astype(np.float32)
    compiled = compile_model(model, x.shape, HOST)
    out = compiled.run_local(x)
    ref = numpy_xnor_popcount(x, conv.weight.detach().numpy(), stride, kernel // 2, pad_value)
    assert np.array_equal(out, ref.astype(np.float32))
    with torch.no_grad():
        assert np.array_equal(model(torch.from_numpy(x)).numpy(), out)  # the training-time layer agrees too


def test_weight_packing_layout():
    w = torch.tensor([1.0, -1.0, 0.0] + [-1.0] * 62).view(1, 65, 1, 1)
    packed = pack_weight_bits(w)
    assert packed.shape == (1, 1, 1, 2) and hwio(packed).shape == (1, 1, 2, 1)
    assert int(packed[0, 0, 0, 0]) == 0b101  # channels 0 and 2 are +1 (0 counts as +1)
    assert int(packed[0, 0, 0, 1]) == 0  # channel 64 is -1; padding channels are 0 bits


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if m.affine:  # ReActNet zero-initialises its residual BN scales: give every branch a say
                m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("binarizer", ["sign", "lab"])
def test_compiled_family_matches_torch(family, binarizer):
    torch.manual_seed(0)
    spec = default_spec(family, binarizer, stem="small", num_classes=10, width_mult=0.25)
    model = create_model(spec).eval()
    _randomise_bn(model)
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    compiled = compile_model(model, x.shape, HOST)
    out, ref = compiled.run_local(x), compiled.reference(x)
    assert out.shape == (1, 10)
    np.testing.assert_allclose(out, ref, atol=1e-4 * max(1.0, np.abs(ref).max()))
    with torch.no_grad():
        assert np.abs(model(torch.from_numpy(x)).numpy() - ref).max() < 1e-3 * max(1.0, np.abs(ref).max())


def test_measure_reports_latency_and_checks_numerics():
    model = create_model(default_spec("bireal18", "lab", stem="small", num_classes=10, width_mult=0.25)).eval()
    compiled = compile_model(model, (1, 3, 8, 8), HOST)
    r = measure(compiled, number=2, repeat=5, threads=1, profile_kernels=True)
    assert len(r.runs_ms) == 5 and r.p10_ms <= r.median_ms <= r.p90_ms and r.median_ms > 0
    assert r.threads == 1 and r.target == "host" and not r.emulated
    assert any(binary for *_, binary in r.kernels) and r.max_abs_error < 1e-3


def test_targets_are_data_and_bad_ones_are_refused():
    assert {"host", "x86", "arm", "arm-a76"} <= set(TARGETS)
    assert TARGETS["arm"].config["mtriple"].startswith("aarch64")
    custom = resolve_target('{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}')
    assert custom.arch == "aarch64" and custom.cross_compiler == "aarch64-linux-gnu-gcc"
    with pytest.raises(TargetError, match="unknown target 'riscv'"):
        resolve_target("riscv")
    with pytest.raises(TargetError, match="malformed"):
        resolve_target('{"kind": "llvm",')


def test_check_numerics_rejects_a_wrong_output():
    from labnas.tvm import check_numerics

    ref = np.array([[1.0, -2.0, 3.0]], np.float32)  # a 2 % change passes, a 15 % one does not
    assert check_numerics(ref + 1e-7, ref) < 1e-6
    with pytest.raises(LoweringError, match="differs from PyTorch"):
        check_numerics(ref + np.array([[0, 0.5, 0]], np.float32), ref)


@pytest.mark.skipif(subprocess.run(["which", "aarch64-linux-gnu-gcc"], capture_output=True).returncode != 0,
                    reason="needs gcc-aarch64-linux-gnu (.ci/run installs it)")
def test_arm_build_is_an_aarch64_elf(tmp_path):
    model = create_model(default_spec("labbnn", "lab", stem="small", num_classes=10, width_mult=0.25)).eval()
    compiled = compile_model(model, (1, 3, 16, 16), TARGETS["arm"])
    path = compiled.export(str(tmp_path / "m.so"))
    head = open(path, "rb").read(20)
    assert head[:4] == b"\x7fELF" and head[4] == 2  # 64-bit
    assert int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64
    with pytest.raises(RemoteError, match="no board is connected"):
        measure(compiled)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on {port}")


@pytest.fixture
def processes():
    """Processes a test starts, each in its own session: at the end the whole group is killed, so an RPC server's
    workers (under qemu: ``qemu-aarch64-static ... popen_worker``) die with it instead of outliving the test."""
    procs = []
    yield procs
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def _start_tvm(processes, module: str, *extra: str) -> int:
    """Start ``python -m tvm.exec.MODULE`` on a free loopback port; return the port."""
    port = _free_port()
    cmd = [sys.executable, "-m", f"tvm.exec.{module}", "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1), *extra]
    processes.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    return port


@pytest.mark.slow
def test_rpc_over_loopback(processes):
    port = _start_tvm(processes, "rpc_server")
    _wait_port(port)
    model = create_model(default_spec("labbnn", "lab", stem="small", num_classes=10, width_mult=0.25)).eval()
    compiled = compile_model(model, (1, 3, 16, 16), HOST)
    r = measure(compiled, remote=RemoteSpec(rpc=("127.0.0.1", port)), number=2, repeat=3)
    assert r.device.get("remote") and r.median_ms > 0 and r.max_abs_error < 1e-3


@pytest.mark.slow
def test_paired_timing_on_a_board_runs_the_reference_in_the_candidates_session(processes, tmp_path, monkeypatch):
    """Over RPC the reference is calibrated on the board (its own cache key) and uploaded into the session that
    times the candidate; an RPC server serves one session at a time, so a second session would hang."""
    from labnas.timing import reference_for

    monkeypatch.setenv("LABNAS_CACHE", str(tmp_path))
    port = _start_tvm(processes, "rpc_server")
    _wait_port(port)
    board = RemoteSpec(rpc=("127.0.0.1", port), timeout_s=120)
    reference = reference_for(HOST, threads=1, remote=board)
    assert reference.how == "measured" and reference.key.startswith(f"board rpc 127.0.0.1:{port} | host | 1 threads")
    assert reference.timer.runner is None  # no session kept open between measurements
    model = create_model(default_spec("bireal18", "lab", stem="small", num_classes=10, width_mult=0.25)).eval()
    compiled = compile_model(model, (1, 3, 16, 16), HOST)
    r = measure(compiled, remote=board, number=2, repeat=5, threads=1, reference=reference)
    assert r.device.get("remote") and r.paired and r.reference_calibrated_ms == reference.ms
    assert r.median_ms == pytest.approx(r.paired_ratio * reference.ms, rel=1e-6)
    assert reference.timer.runner is None
    again = reference_for(HOST, threads=1, remote=board)
    assert again.how == "cached" and again.ms == reference.ms


@pytest.mark.slow
def test_tracker_with_two_servers(processes):
    tport = _start_tvm(processes, "rpc_tracker")
    _wait_port(tport)
    for _ in range(2):
        _start_tvm(processes, "rpc_server", "--tracker", f"127.0.0.1:{tport}", "--key", "board")
    from tvm import rpc

    deadline = time.time() + 60
    while time.time() < deadline:
        summary = rpc.connect_tracker("127.0.0.1", tport).summary()
        if sum(q.get("free", 0) for q in summary["queue_info"].values()) >= 2:
            break
        time.sleep(0.5)
    assert sum(q.get("free", 0) for q in summary["queue_info"].values()) == 2
    model = create_model(default_spec("bireal18", "sign", stem="small", num_classes=10, width_mult=0.25)).eval()
    compiled = compile_model(model, (1, 3, 8, 8), HOST)
    spec = RemoteSpec(tracker=("127.0.0.1", tport), key="board")
    results = [measure(compiled, remote=spec, number=1, repeat=2) for _ in range(2)]
    assert all(r.median_ms > 0 for r in results)


def test_unreachable_rpc_is_a_one_line_error():
    model = create_model(default_spec("bireal18", "sign", stem="small", num_classes=10, width_mult=0.25)).eval()
    compiled = compile_model(model, (1, 3, 8, 8), HOST)
    start = time.time()
    with pytest.raises(RemoteError, match="cannot reach the board at rpc 127.0.0.1:1"):
        measure(compiled, remote=RemoteSpec(rpc=("127.0.0.1", 1), timeout_s=5))
    assert time.time() - start < 60


def test_profile_cli_bad_inputs(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "labnas.cli", *args], capture_output=True, text=True, timeout=300)

    for args, message in (
        (["profile", "bireal18", "--target", "riscv"], "unknown target 'riscv'"),
        (["profile", "bireal18", "--target", '{"kind": "llvm",'], "malformed"),
        (["profile", "resnet9"], "unknown family 'resnet9'"),
    ):
        r = run(*args)
        assert r.returncode == 2, r.stderr
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _have(tool: str) -> bool:
    return subprocess.run(["which", tool], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not all(_have(t) for t in ("debootstrap", "qemu-aarch64-static", "aarch64-linux-gnu-gcc")),
                    reason="needs debootstrap, qemu-user-static, gcc-aarch64-linux-gnu (.ci/run installs them)")
def test_emulated_arm_board_profile_matches_torch(tmp_path, processes):
    from labnas.tvm.arm_emulator import DEFAULT_ROOT, build_root, server_command

    root = build_root(DEFAULT_ROOT)
    port = _free_port()
    cmd, env = server_command(root, port)
    processes.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    _wait_port(port, timeout=180)  # importing TVM under qemu takes ~10 s
    r = subprocess.run([sys.executable, "-m", "labnas.cli", "profile", "labbnn", "--binarizer", "lab", "--input", "3x16x16",
                        "--target", "arm", "--rpc", f"127.0.0.1:{port}", "--emulated", "--repeat", "2", "--number", "1",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    assert "outputs match PyTorch" in r.stdout and "EMULATED" in r.stdout
    record = json.loads((tmp_path / "labbnn_lab_arm_3x16x16.json").read_text())
    assert record["emulated"] is True and record["target"] == "arm" and record["max_abs_error"] < 1e-3
    assert record["median_ms"] > 0
    # the 7x7/2 stem (phase-split input), max-pool and 224-style blocks, scheduled for AArch64
    r = subprocess.run([sys.executable, "-m", "labnas.cli", "profile", "bireal18", "--input", "3x112x112",
                        "--target", "arm", "--rpc", f"127.0.0.1:{port}", "--emulated", "--repeat", "1", "--number", "1",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    assert "outputs match PyTorch" in r.stdout


def test_a_layer_the_lowering_does_not_know_is_named():
    class Erfinv(nn.Module):
        def forward(self, x):
            return torch.special.erfinv(torch.tanh(x))

    with pytest.raises(LoweringError, match="does not support a layer of this model: .*erfinv"):
        compile_model(nn.Sequential(nn.Conv2d(3, 4, 3), Erfinv()).eval(), (1, 3, 8, 8), HOST)


@pytest.mark.parametrize("carry_save", [False, True])
def test_weight_heavy_binary_conv_stays_bit_exact(carry_save):
    """> 32 KB of packed weights switches the plain xnor kernel (NEON's) to tiles of up to 7 pixels
    (kernels.xnor_tile); the carry-save kernel (AVX2's) runs the same layer with its per-channel-block order."""
    import dataclasses

    from labnas.tvm.kernels import WEIGHT_REUSE_BYTES, xnor_tile

    assert xnor_tile(WEIGHT_REUSE_BYTES + 8, 7, 128, 8) == (4, 7)
    assert xnor_tile(WEIGHT_REUSE_BYTES + 8, 6, 128, 8) == (4, 2)
    assert xnor_tile(1024, 14, 64, 8) == (8, 1)
    target = dataclasses.replace(HOST, carry_save_popcount=carry_save)
    rng = np.random.default_rng(7)
    conv = BinaryConv2d(256, 128, 3, 1, binarizer="ste_sign", pad_value=0)  # 128 * 9 * 4 words = 36 KB
    conv.weight.data = torch.from_numpy(rng.standard_normal(conv.weight.shape).astype(np.float32))
    x = rng.standard_normal((1, 256, 7, 7)).astype(np.float32)
    model = nn.Sequential(conv).eval()
    imported, _ = import_model(model, x.shape, carry_save=carry_save)
    xnor = next(f for gv, f in imported.functions.items() if gv.name_hint.startswith("labnas_xnor"))
    assert ("ky" in xnor.script()) != carry_save  # the plain kernel loops over taps; the tree has them unrolled
    out = compile_model(model, x.shape, target).run_local(x)
    ref = numpy_xnor_popcount(x, conv.weight.detach().numpy(), 1, 1, 0)
    assert np.array_equal(out, ref.astype(np.float32))
