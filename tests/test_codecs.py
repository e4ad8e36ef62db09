import numpy as np
import pytest
import torch
from PIL import Image

import mlcodec
from mlcodec.bitstream import read_header, unpack
from mlcodec.metrics import psnr
from mlcodec.models.gained_hyperprior import GainedMeanScaleHyperprior

ALL = mlcodec.list_codecs()
LEARNED = mlcodec.list_codecs(kind="learned")


def test_registry_table():
    assert mlcodec.DEFAULT_CODEC == "mlcodec-hyperprior"
    assert {"mlcodec-hyperprior", "bmshj2018-hyperprior", "jpeg", "webp", "avif"} <= set(ALL)
    assert mlcodec.list_codecs("*hyperprior") == ["mlcodec-hyperprior", "bmshj2018-hyperprior"]
    ids = [mlcodec.codec_config(n).codec_id for n in ALL]
    assert len(set(ids)) == len(ids)
    with pytest.raises(ValueError, match="Unknown codec 'nope'; see mlcodec.list_codecs"):
        mlcodec.create_codec("nope")


@pytest.mark.parametrize("name", ALL)
def test_round_trip_size_and_mode(codecs, name, noise_image):
    codec = codecs[name]
    data = codec.compress(noise_image, quality=0.5)
    assert isinstance(data, bytes) and len(data) > 0
    out = codec.decompress(data)
    assert out.size == noise_image.size and out.mode == "RGB"


@pytest.mark.parametrize("name", LEARNED)
@pytest.mark.parametrize("size", [(1, 1), (1, 70), (63, 65), (130, 70)])
def test_learned_odd_sizes_header_and_latent(codecs, name, size):
    codec = codecs[name]
    w, h = size
    img = Image.new("RGB", (w, h), (200, 30, 90))
    data = codec.compress(img, quality=0.3)
    header = read_header(data)
    assert header.original_size == (h, w)
    assert header.padded_size == (-(-h // 64) * 64, -(-w // 64) * 64)
    assert header.codec_id == codec.config.codec_id
    assert codec.decompress(data).size == (w, h)
    latent = codec.decode_latent(data)
    assert latent.dtype == torch.float32
    assert tuple(latent.shape) == header.latent_shape
    assert latent.shape[1:] == (header.padded_size[0] // 16, header.padded_size[1] // 16)


@pytest.mark.parametrize("name", LEARNED)
def test_deterministic_bytes(codecs, name, noise_image):
    codec = codecs[name]
    assert codec.compress(noise_image, 0.7) == codec.compress(noise_image, 0.7)


@pytest.mark.parametrize("name", LEARNED)
def test_batch_equals_single(codecs, name, noise_image, photo):
    codec = codecs[name]
    images = [noise_image, photo, noise_image.transpose(Image.FLIP_LEFT_RIGHT), photo.rotate(180)]
    batch = codec.compress_batch(images, quality=0.6)
    singles = [codec.decode_latent(b) for b in batch]
    for a, b in zip(codec.decode_latents(batch), singles):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    for im, dec in zip(images, codec.decompress_batch(batch)):
        assert dec.size == im.size


def test_modes_and_input_types(codecs):
    codec = codecs["mlcodec-hyperprior"]
    rng = np.random.default_rng(1)
    rgb8 = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    cases = {
        "L": (Image.fromarray(rgb8[:, :, 0]), "L"),
        "1": (Image.fromarray(rgb8[:, :, 0] > 127), "L"),
        "RGBA": (Image.fromarray(np.dstack([rgb8, rgb8[:, :, :1]])), "RGB"),
        "P": (Image.fromarray(rgb8).convert("P"), "RGB"),
        "CMYK": (Image.fromarray(rgb8).convert("CMYK"), "RGB"),
        "I;16": (Image.fromarray(rgb8[:, :, 0].astype(np.uint16) * 257), "L"),
        "F": (Image.fromarray(rgb8[:, :, 0].astype(np.float32) / 255), "L"),
        "uint16": (rgb8.astype(np.uint16) * 257, "RGB"),
        "float": (rgb8.astype(np.float32) / 255, "RGB"),
        "gray array": (rgb8[:, :, 0], "L"),
        "tensor u8": (torch.from_numpy(rgb8).permute(2, 0, 1).contiguous(), "RGB"),
        "tensor f 1xCxHxW": (torch.from_numpy(rgb8).permute(2, 0, 1)[None].float() / 255, "RGB"),
    }
    for what, (image, mode) in cases.items():
        out = codec.decompress(codec.compress(image, quality=0.5))
        assert out.size == (50, 40), what
        assert out.mode == mode, what


def test_equivalent_inputs_give_equal_bytes(codecs, noise_image):
    codec = codecs["mlcodec-hyperprior"]
    arr = np.array(noise_image)
    a = codec.compress(noise_image, 0.4)
    assert codec.compress(arr, 0.4) == a
    assert codec.compress(torch.from_numpy(arr).permute(2, 0, 1).contiguous(), 0.4) == a
    assert codec.compress(arr.astype(np.uint16) * 257, 0.4) == a


def test_bad_inputs(codecs):
    codec = codecs["mlcodec-hyperprior"]
    with pytest.raises(ValueError, match=r"quality must be a float in \[0, 1\]"):
        codec.compress(Image.new("RGB", (8, 8)), quality=1.5)
    with pytest.raises(TypeError, match="expected a PIL image"):
        codec.compress("photo.jpg")
    with pytest.raises(ValueError, match="image 0: expected HxW"):
        codec.compress(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        codec.compress(np.full((4, 4, 3), np.nan, np.float32))
    with pytest.raises(TypeError, match="jpeg is a pixel codec"):
        codecs["jpeg"].decode_latent(codecs["jpeg"].compress(Image.new("RGB", (8, 8))))


def test_wrong_weights_and_wrong_codec_are_named(codecs, noise_image):
    trained = codecs["mlcodec-hyperprior"]
    data = trained.compress(noise_image, 0.5)
    other = mlcodec.create_codec("mlcodec-hyperprior", pretrained=False)
    fp_data, fp_other = read_header(data).fingerprint.hex(), other.fingerprint(0.5).hex()
    assert fp_data != fp_other
    with pytest.raises(mlcodec.BitstreamError, match=f"{fp_data}.*{fp_other}"):
        other.decompress(data)
    with pytest.raises(mlcodec.BitstreamError, match="codec id 1, not bmshj2018-hyperprior"):
        codecs["bmshj2018-hyperprior"].decode_latent(data)
    assert mlcodec.codec_for(data).name == "mlcodec-hyperprior"


def test_unpacked_bitstreams_decode_like_bytes_and_are_still_checked(codecs, noise_image, photo):
    codec = codecs["mlcodec-hyperprior"]
    datas = codec.compress_batch([noise_image, photo], 0.5)
    streams = [unpack(d) for d in datas]
    for a, b in zip(codec.decode_latents(streams), codec.decode_latents(datas)):
        assert torch.equal(a, b)
    assert mlcodec.codec_for(streams[0]).name == "mlcodec-hyperprior"
    other = mlcodec.create_codec("mlcodec-hyperprior", pretrained=False)
    with pytest.raises(mlcodec.BitstreamError, match="was written with weights"):
        other.decode_latents(streams)
    with pytest.raises(mlcodec.BitstreamError, match="codec id 1, not bmshj2018-hyperprior"):
        codecs["bmshj2018-hyperprior"].decode_latents(streams)


def test_corrupted_bytes_raise(codecs, noise_image):
    codec = codecs["mlcodec-hyperprior"]
    data = bytearray(codec.compress(noise_image, 0.5))
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(mlcodec.BitstreamError, match="bitstream 0: corrupted"):
        codec.decompress(bytes(data))
    with pytest.raises(mlcodec.BitstreamError, match="truncated"):
        codec.decode_latent(bytes(data[:60]))


def test_default_codec_quality_is_monotone(codecs, photo):
    codec = codecs["mlcodec-hyperprior"]
    sizes, psnrs = [], []
    for q in (0.0, 0.25, 0.5, 0.75, 1.0):
        data = codec.compress(photo, q)
        sizes.append(len(data))
        psnrs.append(psnr(photo, codec.decompress(data)))
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    assert psnrs == sorted(psnrs)


def test_format_2_skips_tiny_scale_symbols_and_reads_format_1(photo):
    """Version 2 leaves out symbols of sigma <= 0.204; version-1 streams still decode exactly
    (both through the float hyper-synthesis they were written with)."""
    from mlcodec.codecs.hyperprior import SKIP_INDEX

    v2 = mlcodec.create_codec("mlcodec-hyperprior")
    v2.format_version = 2
    v1 = mlcodec.create_codec("mlcodec-hyperprior")
    v1.format_version = 1
    d1, d2 = v1.compress(photo, 0.5), v2.compress(photo, 0.5)
    assert (read_header(d1).version, read_header(d2).version) == (1, 2)
    s1, s2 = unpack(d1).strings, unpack(d2).strings
    assert len(s1) == 1 and len(s2) == 2 and len(s2[1]) == 4  # v2: rANS + symbol checksum
    assert len(s2[0]) < len(s1[0])
    y1, y2 = v2.decode_latent(d1), v2.decode_latent(d2)  # the v2 codec reads both
    # Every symbol v2 codes is decoded exactly as in v1; the skipped ones are (almost) all zero
    # there too, so the latents agree except at a vanishing fraction of positions.
    inv_gain = v2.model.gains(torch.tensor([0.5]))[1][0]
    same = ((y1 - y2) * inv_gain.reciprocal()).abs() < 1e-3
    assert same.float().mean() > 0.999
    assert SKIP_INDEX[1] < 0 < SKIP_INDEX[2]


def test_scale_indexes_equal_compressai_build_indexes():
    from mlcodec.codecs.hyperprior import _CoderTables

    model = mlcodec.create_codec("mlcodec-hyperprior").model
    tables = _CoderTables(model)
    table = model.gaussian_conditional.scale_table[:-1].float()
    scales = torch.cat([
        torch.exp(torch.randn(20000) * 3), table, torch.nextafter(table, torch.tensor(0.0)),
        torch.nextafter(table, torch.tensor(1e9)), torch.tensor([0.0, -3.0, 1e30]),
    ])
    expected = model.gaussian_conditional.build_indexes(scales)
    assert torch.equal(tables.scale_indexes(scales), expected.to(torch.int32))


@pytest.mark.parametrize("name", LEARNED)
def test_synthesize_from_decoded_latents_equals_decompress(codecs, name, noise_image, photo):
    codec = codecs[name]
    datas = codec.compress_batch([photo, noise_image, photo.rotate(90, expand=True)], quality=0.4)
    latents = codec.decode_latents(datas)
    for a, b in zip(codec.synthesize(latents, datas), codec.decompress_batch(datas)):
        assert a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="2 latents for 3 bitstreams"):
        codec.synthesize(latents[:2], datas)
    with pytest.raises(ValueError, match="latent 0 has shape"):
        codec.synthesize([latents[1], latents[1], latents[2]], datas)


def test_decoding_does_not_depend_on_the_batch(photo):
    """The coder's tables are picked by the hyper-synthesis' scales: decoding an image alone, in
    a batch of any size, or beside images of other qualities must give the same symbols, or a
    flipped table index desyncs the rANS stream and yields a garbage latent the CRC cannot see."""
    codec = mlcodec.create_codec("mlcodec-hyperprior")
    rng = np.random.default_rng(0)
    arr = np.asarray(photo)
    crops = []
    for _ in range(24):
        y, x = rng.integers(0, arr.shape[0] - 64), rng.integers(0, arr.shape[1] - 64)
        crops.append(Image.fromarray(arr[y:y + 64, x:x + 64]))
    qualities = [0.1, 0.5, 0.9]
    datas = [d for i, q in enumerate(qualities) for d in codec.compress_batch(crops[i::3], quality=q)]
    singles = [codec.decode_latent(d) for d in datas]
    for batch in (datas, datas[::-1], datas[5:17]):
        for a, b in zip(codec.decode_latents(batch), [singles[datas.index(d)] for d in batch]):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
    # and encoding alone gives the bytes encoding in a batch gave
    assert [codec.compress(c, 0.1) for c in crops[0::3][:4]] == datas[:4]


@pytest.mark.parametrize("hyper_kernel", [1, 3])
def test_hyper_synthesis_is_bitwise_independent_of_the_batch(hyper_kernel):
    """What the test above needs, checked where a rare index flip starts: every float. The
    packaged model's last hyper-synthesis layer is 1x1; models from train-codec have 3x3."""
    if hyper_kernel == 1:
        model = mlcodec.create_codec("mlcodec-hyperprior").model
    else:
        torch.manual_seed(3)
        model = GainedMeanScaleHyperprior(N=32, M=32, hyper_kernel=3).eval()
    gen = torch.Generator().manual_seed(0)
    for hw in ((1, 1), (2, 2), (4, 6)):  # small images are where a batched conv differed
        z = torch.randn(32, model.N, *hw, generator=gen).mul(4).round()
        q = torch.rand(32, generator=gen)
        with torch.inference_mode():
            inv_hgain = model.gains(q)[3]
            full = torch.cat(model.hyper_synthesis(z, inv_hgain), 1)
            for size in (1, 5, 16):
                parts = [torch.cat(model.hyper_synthesis(z[i:i + size], inv_hgain[i:i + size]), 1)
                         for i in range(0, 32, size)]
                assert torch.equal(torch.cat(parts), full), (hw, size)


def test_a_desynchronised_decoder_is_caught_by_the_symbol_checksum(photo, monkeypatch):
    """If the decoder's scales differ from the encoder's (another machine), one shifted table
    index garbles the rest of the rANS stream; format 2's checksum turns that into an error."""
    codec = mlcodec.create_codec("mlcodec-hyperprior")
    codec.format_version = 2
    data = codec.compress(photo, 0.5)
    tables = codec._tables
    exact = tables.scale_indexes

    def off_by_one(scales):
        idx = exact(scales).clone()
        flat = idx.view(-1)
        j = int(torch.nonzero(flat > 6)[0])
        flat[j] += 1
        return idx

    monkeypatch.setattr(tables, "scale_indexes", off_by_one)
    # garbage either fails the checksum or runs out of words first; both name the likely cause
    with pytest.raises(mlcodec.BitstreamError, match="other entropy-model scales"):
        codec.decode_latent(data)


def test_released_weights_stay_addressable_by_fingerprint(tmp_path, noise_image):
    """``mlcodec-hyperprior@2`` replaced the first weights: ``NAME@1`` still builds the first
    release and ``codec_for`` picks the release a stream's fingerprint names: a file, a verify run
    and a loader over shards mixing both releases decode every stream with the weights that wrote
    it."""
    import webdataset as wds

    from mlcodec.integrations.webdataset import latent_dataset
    from mlcodec.verify import verify

    old_codec, new_codec = mlcodec.create_codec("mlcodec-hyperprior@1"), mlcodec.create_codec()
    assert old_codec.config.name == "mlcodec-hyperprior@1"
    assert old_codec.config.weights == "mlcodec-hyperprior@1.safetensors"
    assert new_codec.config.weights == "mlcodec-hyperprior.safetensors"
    assert old_codec.model.hyper_hidden == 0 and tuple(new_codec.model.hyper_hidden) == (64, 64)
    old, fresh = old_codec.compress(noise_image, 0.5), new_codec.compress(noise_image, 0.5)
    assert read_header(old).fingerprint != read_header(fresh).fingerprint
    assert mlcodec.codec_for(old).config.name == "mlcodec-hyperprior@1"
    assert mlcodec.codec_for(fresh).config.name == "mlcodec-hyperprior"  # the newest by its plain name
    expected = {"old": old_codec.decode_latent(old), "new": new_codec.decode_latent(fresh)}
    assert not torch.equal(expected["old"], expected["new"])  # so a stream read by the other release shows
    format2 = mlcodec.create_codec("mlcodec-hyperprior@1")
    format2.format_version = 2  # an older format of the first release's weights finds them too
    older = format2.compress(noise_image, 0.5)
    assert read_header(older).version == 2 and mlcodec.codec_for(older).config.name == "mlcodec-hyperprior@1"
    assert torch.equal(mlcodec.codec_for(older).decode_latent(older), format2.decode_latent(older))
    with pytest.raises(ValueError, match=r"has releases @1..@2"):
        mlcodec.create_codec("mlcodec-hyperprior@3")
    with pytest.raises(ValueError, match="not both"):
        mlcodec.create_codec(f"mlcodec-hyperprior@1:{tmp_path / 'w.safetensors'}")

    (tmp_path / "old.mlc").write_bytes(old)
    (tmp_path / "new.mlc").write_bytes(fresh)
    report = verify([tmp_path / "old.mlc", tmp_path / "new.mlc"], progress=False)
    assert report.samples == 2 and not report.failures

    shard = tmp_path / "mixed-000000.tar"
    with wds.TarWriter(str(shard)) as w:
        for i, name in enumerate(["old", "new", "old", "new"]):
            w.write({"__key__": f"{i:04d}_{name}", "mlc": old if name == "old" else fresh, "cls": b"0"})
    got = {s["__key__"]: s["latent"] for s in latent_dataset([str(shard)], decode_batch=4)}
    assert len(got) == 4
    assert all(torch.equal(y, expected[k.split("_")[1]]) for k, y in got.items())
