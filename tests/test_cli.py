import json

import numpy as np
import pytest
from PIL import Image

from mlcodec.cli import main


@pytest.fixture()
def image_dir(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(src / "a.png")
    Image.fromarray(rng.integers(0, 256, (33, 17), dtype=np.uint8)).save(src / "sub" / "b.jpg")
    (src / "notes.txt").write_text("not an image")
    return src


def test_compress_decode_info(tmp_path, image_dir, capsys):
    out = tmp_path / "mlc"
    assert main(["-q", "compress", str(image_dir), "-o", str(out), "--quality", "0.3"]) == 0
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mlc"))
    assert files == ["a.mlc", "sub/b.mlc"]
    assert "compressed 2 images" in capsys.readouterr().out

    png = tmp_path / "png"
    assert main(["-q", "decode", str(out), "-o", str(png)]) == 0
    a, b = Image.open(png / "a.png"), Image.open(png / "sub" / "b.png")
    assert (a.size, a.mode) == ((60, 40), "RGB")
    assert (b.size, b.mode) == ((17, 33), "L")

    capsys.readouterr()
    assert main(["info", str(out / "a.mlc"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["codec"] == "mlcodec-hyperprior"
    assert info["original_size"] == [40, 60] and info["padded_size"] == [64, 64]
    assert info["quality"] == pytest.approx(0.3)
    assert info["bytes"] == (out / "a.mlc").stat().st_size


def test_compress_with_pixel_codec(tmp_path, image_dir):
    out = tmp_path / "jpg"
    assert main(["-q", "compress", str(image_dir / "a.png"), "-o", str(out), "--codec", "jpeg"]) == 0
    assert Image.open(out / "a.jpg").format == "JPEG"


def test_errors_are_one_line_and_nonzero(tmp_path, image_dir, capsys):
    assert main(["compress", str(tmp_path / "missing"), "-o", str(tmp_path / "o")]) == 2
    assert "no such file or folder" in capsys.readouterr().err

    with pytest.raises(SystemExit) as e:  # refused by the argument parser, before any work
        main(["compress", str(image_dir), "-o", str(tmp_path / "o"), "--quality", "2"])
    assert e.value.code == 2 and "quality must be in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert main(["-q", "compress", str(broken), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "broken.png: cannot compress" in err

    out = tmp_path / "mlc"
    main(["-q", "compress", str(image_dir / "a.png"), "-o", str(out)])
    data = bytearray((out / "a.mlc").read_bytes())
    data[len(data) // 2] ^= 1  # inside the rANS payload
    (out / "a.mlc").write_bytes(bytes(data))
    assert main(["-q", "decode", str(out / "a.mlc"), "-o", str(tmp_path / "png")]) == 2
    assert "a.mlc: corrupted bitstream" in capsys.readouterr().err

    (out / "fake.mlc").write_bytes(b"GIF89a....")
    assert main(["info", str(out / "fake.mlc")]) == 2
    assert "not an mlcodec bitstream" in capsys.readouterr().err


def test_demo_prints_what_it_did(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path), "--size", "128"]) == 0
    out = capsys.readouterr().out
    assert "astronaut" in out and "PSNR" in out and "bpp" in out
    assert sorted(p.name for p in tmp_path.glob("*.mlc")) == ["astronaut.mlc", "chelsea.mlc", "coffee.mlc"]
    assert Image.open(tmp_path / "coffee.png").size[0] == 128


def test_the_command_runs_as_a_module_and_prints_no_warnings(tmp_path, image_dir):
    """``python -m mlcodec --version``, then ``compress`` and ``decode`` of clean images in fresh
    processes, as users run them: nothing on stderr that is a warning (torch's, CompressAI's,
    numpy's), and the flags work after the subcommand."""
    import subprocess
    import sys

    import mlcodec

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mlcodec", *args], capture_output=True, text=True,
                              timeout=600)

    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"mlcodec {mlcodec.__version__}"
    (image_dir / "notes.txt").unlink()
    done = [run("compress", str(image_dir), "-o", str(tmp_path / "c"), "-q")]
    done.append(run("decode", str(tmp_path / "c"), "-o", str(tmp_path / "d"), "-q"))
    assert [r.returncode for r in done] == [0, 0], [r.stderr for r in done]
    assert "bpp" in done[0].stdout and sorted(p.name for p in (tmp_path / "d").rglob("*.png")) == ["a.png", "b.png"]
    for r in done:
        assert "warn" not in r.stderr.lower(), r.stderr
