"""Format 3: the integer hyper-synthesis decides every entropy-table index and mean exactly alike
on every thread count, batch, instruction set and device (golden streams of every released set of
weights in tests/data: tests/golden_decode.py)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mlcodec
from mlcodec.bitstream import read_header
from mlcodec.models import exact_calibration as ecal
from mlcodec.models import exact_hyper as eh
from mlcodec.models import exact_indexes as eidx
from mlcodec.models import exact_reference as eref

sys.path.insert(0, str(Path(__file__).parent))
from golden_decode import RELEASES, decode_hashes, expected_hashes, golden_files  # noqa: E402

FOLDERS = list(RELEASES)
IDS = [f.name for f in FOLDERS]


@pytest.fixture(scope="module")
def codec():
    return mlcodec.create_codec()


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_released_streams_are_format_3_listed_and_name_their_release(folder):
    """Every release's golden streams: format 3, all listed, and ``codec_for`` picks the release
    that wrote them by the fingerprint in their headers (``@1`` after ``@2`` replaced it)."""
    files = golden_files(folder)
    assert len(files) == 21 and {f.name for f in files} == set(expected_hashes(folder))
    assert {read_header(f.read_bytes()).version for f in files} == {3}
    index = json.loads((folder / "golden.json").read_text())
    for f in files:
        h = read_header(f.read_bytes())
        codec = mlcodec.codec_for(f.read_bytes())
        assert codec.config.name == RELEASES[folder], f.name
        assert h.fingerprint in codec.fingerprints(h.quality), f.name
        assert index[f.name].get("fingerprint", h.fingerprint.hex()) == h.fingerprint.hex(), f.name


@pytest.mark.parametrize("batch", [1, 7, 16])
@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_golden_latents_for_every_batch_size(folder, batch):
    assert decode_hashes(batch, folder) == expected_hashes(folder)


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_golden_latents_equal_the_numpy_integer_reference(folder):
    files, expected = golden_files(folder), expected_hashes(folder)
    codec = mlcodec.codec_for(files[0].read_bytes())
    for f in files:
        data = f.read_bytes()
        ref = codec.reference_latent(data)
        assert np.array_equal(codec.decode_latent(data).numpy(), ref), f.name
        assert hashlib.sha256(ref.astype("<f4").tobytes()).hexdigest() == expected[f.name], f.name


def test_the_plain_names_are_the_newest_releases():
    assert mlcodec.create_codec().fingerprint(0.5) == \
        mlcodec.create_codec("mlcodec-hyperprior@2").fingerprint(0.5)
    assert mlcodec.create_codec().fingerprint(0.5) != \
        mlcodec.create_codec("mlcodec-hyperprior@1").fingerprint(0.5)
    newest, first, second = (mlcodec.create_codec(f"mlcodec-unified{r}") for r in ("", "@1", "@2"))
    assert newest.fingerprint(0.5) == mlcodec.create_codec("mlcodec-unified@3").fingerprint(0.5)
    assert len({newest.fingerprint(0.5), first.fingerprint(0.5), second.fingerprint(0.5)}) == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here; runs where one is lent")
@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_golden_latents_on_cuda(folder, monkeypatch):
    """The CPU-written golden streams decode on a GPU to the same latents, bit for bit: the
    integer hyper-synthesis in torch ops there (TF32 off; the exact path also pins matmul
    precision to highest), rANS on the CPU."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert decode_hashes(7, folder, device="cuda") == expected_hashes(folder)


#: (name, torch threads, environment): lower instruction sets for ATen's kernels, oneDNN's
#: convolutions, MKL's GEMMs and numba's kernels (compiled for a generic x86-64 CPU), each set in
#: a fresh process before torch loads
SETTINGS = [
    ("1 thread", 1, {}),
    ("2 threads", 2, {}),
    ("AVX2", 2, {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                 "MKL_ENABLE_INSTRUCTIONS": "AVX2"}),
    ("default ISA", 1, {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                        "NUMBA_CPU_NAME": "generic"}),
]


@pytest.mark.parametrize("name,threads,env", SETTINGS, ids=[s[0] for s in SETTINGS])
def test_golden_latents_in_a_fresh_process(name, threads, env):
    """Every release's golden streams, decoded in a fresh process under each setting."""
    script = Path(__file__).parent / "golden_decode.py"
    full_env = {**os.environ, **env, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, str(script), str(threads), "7"], env=full_env,
                         capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["threads"] == threads
    if "ATEN_CPU_CAPABILITY" in env:  # the settings took effect
        assert result["capability"].lower() == env["ATEN_CPU_CAPABILITY"]
    assert result["numba_cpu"] == env.get("NUMBA_CPU_NAME", "host")
    assert result["hashes"] == {f.name: expected_hashes(f) for f in FOLDERS}, name


@pytest.mark.parametrize("path", ["cpu-kernels", "torch-ops"])
def test_fast_path_equals_the_numpy_reference_on_random_hyper_latents(codec, path, monkeypatch):
    """Shapes from 1x1 up, symbols beyond the clamp, qualities on and between the levels; on a
    CPU through the integer kernels between the GEMMs, and through torch ops alone (a GPU's path)."""
    m, ex = codec.model, codec._hyper
    assert ex._cpu is not None  # the shipped tables have a bucket index table, so CPUs take the kernels
    if path == "torch-ops":
        monkeypatch.setattr(ex, "_cpu", None)
    gen = torch.Generator().manual_seed(0)
    for shape, q in [((3, 1, 1), 0.0), ((2, 3, 5), 1.0), ((1, 8, 8), 0.5), ((4, 2, 7), 0.1234567),
                     ((1, 5, 3), 0.9)]:
        b, h, w = shape
        z = (torch.randn(b, m.N, h, w, generator=gen) * 6).round().int()
        z[0, 0, 0, 0] = 400  # clamped to z_max on both sides
        idx, means = ex(z, q)
        ridx, rmeans = eref.reference_params(codec.exact, m.h_s[0].weight, m.log_inv_hyper_gain,
                                           m.log_inv_gain, z.numpy(), q)
        assert idx.shape == (b, m.M, 4 * h, 4 * w)
        assert np.array_equal(idx.numpy(), ridx) and np.array_equal(means.numpy(), rmeans), shape
        assert idx.min() >= 0 and idx.max() <= m.gaussian_conditional.scale_table.numel() - 1


def test_phase_gemms_equal_conv_transpose():
    gen = torch.Generator().manual_seed(1)
    w = torch.randint(-50, 50, (6, 5, 5, 5), generator=gen).double()
    x = torch.randint(-9, 9, (2, 6, 3, 4), generator=gen).double()
    expected = F.conv_transpose2d(x, w, stride=2, padding=2, output_padding=1)
    got = eh._Deconv(w, torch.device("cpu"), torch.float64)(x)
    assert torch.equal(got, expected)
    # the CPU's operand takes channels first and gives the phases' accumulators (4, Cout, B, h, w)
    acc = eh._Deconv(w, torch.device("cpu"), torch.float32).accumulate_cpu(x.float().transpose(0, 1).contiguous().numpy())
    for p, (ph, pw) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        assert torch.equal(torch.from_numpy(acc[p]).transpose(0, 1).double(), expected[:, :, ph::2, pw::2])
    assert np.array_equal(eref._np_deconv(x.long().numpy(), w.long().numpy()), expected.long().numpy())


def test_exact_exp_is_close_to_exp():
    for x in np.linspace(-12, 12, 2001):
        assert math.isclose(eh.exact_exp(float(x)), math.exp(x), rel_tol=1e-15)  # a few ulp


def test_tables_hold_the_accumulator_bound_and_refuse_ones_that_do_not(codec):
    t, m = codec.exact, codec.model
    ecal._check_tables(t, m.h_s[0].weight, m.log_inv_hyper_gain)
    for q in np.linspace(0, 1, 37):  # between levels too
        ihg = eh.quality_constants(m.log_inv_hyper_gain, m.log_inv_gain, float(q)).inv_hyper_gain
        eh.layer0_weights(m.h_s[0].weight, ihg, t)
    import dataclasses

    bad = dataclasses.replace(t, w0_scale=t.w0_scale * 64)
    with pytest.raises(ArithmeticError, match="2\\^24"):
        ecal._check_tables(bad, m.h_s[0].weight, m.log_inv_hyper_gain)


def test_format_3_costs_little_rate_and_no_quality(codec, photo):
    float_codec = mlcodec.create_codec()
    float_codec.format_version = 2
    for q in (0.1, 0.5, 0.9):
        d3, d2 = codec.compress(photo, q), float_codec.compress(photo, q)
        assert len(d3) <= len(d2) * 1.02, q
        x3, x2 = (np.asarray(c.decompress(d), dtype=np.float64) for c, d in ((codec, d3), (float_codec, d2)))
        ref = np.asarray(photo, dtype=np.float64)
        assert abs(np.mean((x3 - ref) ** 2) - np.mean((x2 - ref) ** 2)) < 0.02 * np.mean((x2 - ref) ** 2)


def test_weights_keep_the_float_fingerprint_for_older_formats(codec):
    """The integer tables change format 3's fingerprint, not the one formats 1-2 carry, so the
    streams an older release wrote still decode with the same weights file."""
    assert codec.stream_fingerprint(0.5, 3) != codec.stream_fingerprint(0.5, 2)
    assert codec.stream_fingerprint(0.5, 2) == codec.stream_fingerprint(0.5, 1)
    assert set(codec.fingerprints(0.5)) == {codec.stream_fingerprint(0.5, v) for v in (2, 3)}


def _with_bad_checksum(data: bytes) -> bytes:
    from mlcodec.bitstream import Bitstream, pack, unpack

    bs = unpack(data)
    return pack(Bitstream(bs.header, (bs.strings[0], bytes(b ^ 0xFF for b in bs.strings[1]))))


def test_verify_names_each_failing_file_and_counts_formats(tmp_path, codec, photo, capsys):
    from mlcodec.cli import main

    old = mlcodec.create_codec()
    old.format_version = 2
    good = [f.read_bytes() for f in golden_files()[:9]]
    for i, d in enumerate(good):
        (tmp_path / f"good{i}.mlc").write_bytes(d)
    (tmp_path / "old.mlc").write_bytes(old.compress(photo, 0.5))
    (tmp_path / "bad.mlc").write_bytes(_with_bad_checksum(good[3]))
    (tmp_path / "cut.mlc").write_bytes(good[0][:30])
    assert main(["-q", "verify", str(tmp_path), "--batch", "4"]) == 1
    out = capsys.readouterr().out
    failed = sorted(line.split()[1].rsplit("/", 1)[-1].rstrip(":") for line in out.splitlines()
                    if line.startswith("FAIL"))
    assert failed == ["bad.mlc", "cut.mlc"]
    assert "fails its checksum" in out and "truncated" in out
    assert "verified 12 samples (format 2: 1, format 3: 10): 10 decode, 2 fail" in out
    assert "re-encode" in out
    (tmp_path / "bad.mlc").unlink()
    (tmp_path / "cut.mlc").unlink()
    assert main(["-q", "verify", str(tmp_path)]) == 0


def test_the_hyper_synthesis_in_row_chunks_equals_one_pass(codec, monkeypatch):
    """Large images run the integer hyper-synthesis in chunks of hyper-latent rows with a halo of
    the layers' reach (2 rows): integer arithmetic, so bit-identical to one pass; 1 row is not
    enough (the test can tell)."""
    import mlcodec.models.exact_hyper as eh

    z = torch.randint(-6, 7, (2, 96, 41, 23), generator=torch.Generator().manual_seed(0)).int()
    idx, means = codec._hyper(z, 0.5, rows=10_000)
    assert idx.shape == means.shape == (2, 96, 164, 92)
    for rows in (1, 3, 16):
        a, b = codec._hyper(z, 0.5, rows=rows)
        assert torch.equal(a, idx) and torch.equal(b, means)
    monkeypatch.setattr(eh, "_reach", lambda k: 1)
    a, b = codec._hyper(z, 0.5, rows=8)
    assert not (torch.equal(a, idx) and torch.equal(b, means))


def test_decode_each_retries_a_failed_batch_item_by_item():
    """The loader's and verify's batch fallback: a batch that decodes is decoded once; one that
    fails is retried item by item, naming the culprits, or none when each decodes alone."""
    from mlcodec.bitstream import BitstreamError
    from mlcodec.codecs.decoding import decode_each

    calls = []

    def decode(items):
        calls.append(list(items))
        if "bad" in items or ("shy" in items and len(items) > 1):
            raise BitstreamError(f"cannot decode {items}")
        return [s.upper() for s in items]

    assert decode_each(decode, ["a", "b"]) == (["A", "B"], None) and calls == [["a", "b"]]
    calls.clear()
    out, err = decode_each(decode, ["a", "bad", "c"])
    assert out[0] == "A" and out[2] == "C" and isinstance(out[1], BitstreamError)
    assert isinstance(err, BitstreamError) and calls == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]
    out, err = decode_each(decode, ["shy", "a"])  # fails only together
    assert out == ["SHY", "A"] and err is not None
    out, err = decode_each(decode, ["bad"])
    assert out == [err] and isinstance(err, BitstreamError)
    with pytest.raises(KeyError):  # other errors are not caught
        decode_each(lambda items: {}["x"], ["a"])


def test_scale_indexer_equals_binary_search_on_every_path(codec):
    """The bucket table (a CPU's path), the log-guess indexer (numpy, and torch as on other
    devices) against searchsorted, on the packaged thresholds at and around every threshold; on
    a table with repeated thresholds, where the log guess fails and must fall back to the binary
    search; and on one the bucket table refuses (two values in one bucket)."""
    t = codec.exact.thresholds
    gen = torch.Generator().manual_seed(0)
    edges = t.clamp(max=2**24 - 1).float()
    acc = torch.cat([torch.randint(-2**24 + 1, 2**24, (t.shape[0], 3000), generator=gen).float(),
                     torch.arange(-300, 300).float().expand(t.shape[0], -1),
                     edges, edges + 1, edges - 1], 1)
    expected = torch.searchsorted(t, acc.long().contiguous())
    indexer = eidx._ScaleIndexer(t)
    assert indexer._buckets is not None
    assert torch.equal(indexer(acc).long(), expected)
    idx, ok = indexer._numpy(acc.numpy())
    assert ok and np.array_equal(idx, expected.numpy())
    idx, ok = indexer._torch(acc)
    assert ok and torch.equal(idx, expected)
    flat = t.clone()
    flat[0, :10] = flat[0, 0]  # ten equal thresholds: the guess is off by more than one
    expected = torch.searchsorted(flat, acc.long().contiguous())
    assert not eidx._ScaleIndexer(flat)._numpy(acc.numpy())[1]
    assert eidx._ScaleIndexer(flat)._buckets is not None  # equal values share a bucket
    assert torch.equal(eidx._ScaleIndexer(flat)(acc).long(), expected)
    close = t.clone()
    close[1, 31] = close[1, 30] + 1  # one bucket, two values: no table (the row stays sorted)
    assert bool((close[1, 1:] >= close[1, :-1]).all())
    assert eidx._BucketIndexer.build(close.numpy()) is None
    assert eidx._ScaleIndexer(close)._buckets is None
    expected = torch.searchsorted(close, acc.long().contiguous())
    assert torch.equal(eidx._ScaleIndexer(close)(acc).long(), expected)


def test_kernels_load_before_the_fork_covers_every_signature_a_decode_needs():
    """DataLoader workers inherit what ``exact_kernels.load()`` compiled in the parent: a decode
    after it must not compile again (a compile in each worker costs seconds). In a fresh process,
    so that no earlier test has compiled them."""
    code = (
        "import torch, mlcodec\n"
        "from mlcodec.models import exact_kernels as k\n"
        "k.load()\n"
        "n = lambda: [len(k._compiled(f).signatures) for f in ('tap_columns', 'requant_phases', 'indexes_and_means', 'dequantize')]\n"
        "before = n()\n"
        "c = mlcodec.create_codec('mlcodec-hyperprior')\n"
        "c._hyper(torch.zeros(3, c.model.N, 2, 3, dtype=torch.int32), 0.5)\n"
        "import json; print(json.dumps([before, n()]))\n"
    )
    before, after = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                              check=True).stdout)
    assert before == after and min(before) >= 1


def test_dequantize_kernel_equals_the_float64_ops(codec):
    """The CPU's one-pass dequantization gives the bits of the torch ops a GPU runs, at qualities
    on and between the levels, over the whole range of symbols and means."""
    gen = torch.Generator().manual_seed(3)
    for q in (0.0, 0.3, 0.77, 1.0):
        y = torch.randint(-3000, 3000, (3, codec.model.M, 9, 11), generator=gen, dtype=torch.int32)
        mu = torch.randint(-2**22, 2**22, y.shape, generator=gen, dtype=torch.int32)
        ig = codec._hyper.for_quality(q)[0].inv_gain.view(1, -1, 1, 1)
        expected = (y.double() + mu.double() * 2.0**-eh.MEAN_FRAC_BITS).mul_(ig).float()
        assert torch.equal(codec._hyper.dequantize(y, mu, q), expected), q
