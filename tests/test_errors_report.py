"""Bad input against `internvqa_jax.report`, and the shared CLI convention (docs/errors.md)."""

import json
import os

import pytest

from internvqa_jax import cli_errors, report


def _write(path, text, bom=False):
  path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
  return str(path)


def _scores(tmp_path, values):
  rows = "".join(f"v{i}.mp4,{v}\n" for i, v in enumerate(values))
  return _write(tmp_path / "scores.csv", "path,score_a\n" + rows)


def _labels(tmp_path, n, bom=False):
  rows = "".join(f"v{i},{50 + 7 * i - (i % 3) * 5}\n" for i in range(n))
  return _write(tmp_path / "labels.csv", "video_id,mos\n" + rows, bom=bom)


# Item 10: constant predictions are an error naming the model, unless asked to go on.
def test_constant_predictions_stop_unless_allowed(tmp_path, capsys):
  scores, labels = _scores(tmp_path, [0.5] * 6), _labels(tmp_path, 6)
  out = tmp_path / "out"
  rc = report.main(["--scores", scores, "--labels", labels, "--out-dir", str(out)])
  err = capsys.readouterr().err
  assert rc == 1
  assert err.count("\n") == 1 and "'a' (all 0.5)" in err and "undefined" in err
  assert "--allow-constant-predictions" in err
  assert not out.exists()  # Nothing written.
  args = ["--scores", scores, "--labels", labels, "--out-dir", str(out)]
  assert report.main([*args, "--allow-constant-predictions"]) == 0
  written = json.load(open(out / "report.json"))
  assert written["constant_predictions"] == ["a"]
  assert all(written["metrics"]["a"][k] != written["metrics"]["a"][k] for k in ("srcc", "plcc"))
  assert "undefined (nan) for constant predictions" in (out / "report.md").read_text()


# Item 10: a UTF-8 byte-order mark (Excel's CSV) is accepted.
def test_labels_with_utf8_bom(tmp_path):
  scores = _scores(tmp_path, [0.1, 0.4, 0.3, 0.9, 0.7, 0.2])
  labels = _labels(tmp_path, 6, bom=True)
  out = tmp_path / "out"
  assert report.main(["--scores", scores, "--labels", labels, "--out-dir", str(out)]) == 0
  assert json.load(open(out / "report.json"))["label_column"] == "mos"


def test_constant_labels_name_the_files_and_write_nothing(tmp_path, capsys):
  scores = _scores(tmp_path, [0.1, 0.4, 0.3, 0.9])
  labels = _write(
    tmp_path / "labels.csv", "video_id,mos\n" + "".join(f"v{i},3\n" for i in range(4))
  )
  out = tmp_path / "out"
  assert report.main(["--scores", scores, "--labels", labels, "--out-dir", str(out)]) == 1
  err = capsys.readouterr().err
  assert scores in err and labels in err and "target is constant" in err
  assert not out.exists()


# Item 8 (report): --out-dir that is a file, checked before any work.
def test_out_dir_that_is_a_file(tmp_path, capsys):
  scores, labels = _scores(tmp_path, [0.1, 0.4, 0.3]), _labels(tmp_path, 3)
  out = tmp_path / "report"
  out.write_text("keep")
  rc = report.main(["--scores", scores, "--labels", labels, "--out-dir", str(out)])
  err = capsys.readouterr().err
  assert rc == 1 and f"--out-dir {out} is a file" in err and err.count("\n") == 1
  assert out.read_text() == "keep"


# The convention itself: exit codes, one line, --verbose / INTERNVQA_VERBOSE.
def test_cli_errors_convention(capsys, monkeypatch):
  def fails(exc):
    def main(argv):
      assert "--verbose" not in argv  # Taken out before the parser sees it.
      raise exc

    return main

  assert cli_errors.run(fails(cli_errors.UsageError("--x 0: expected 1")), []) == 2
  assert capsys.readouterr().err == "error: --x 0: expected 1\n"
  assert cli_errors.run(fails(FileNotFoundError(2, "No such file", "/a/b")), []) == 1
  assert capsys.readouterr().err == "error: /a/b: No such file\n"
  assert cli_errors.run(fails(ValueError("bad.csv: row 3")), ["--verbose"]) == 1
  err = capsys.readouterr().err
  assert "Traceback" in err and err.endswith("error: bad.csv: row 3\n")
  monkeypatch.setenv(cli_errors.VERBOSE_ENV, "1")
  assert cli_errors.run(fails(ValueError("x")), []) == 1
  assert "Traceback" in capsys.readouterr().err
  monkeypatch.delenv(cli_errors.VERBOSE_ENV)
  assert cli_errors.run(fails(KeyboardInterrupt()), []) == 130
  with pytest.raises(ZeroDivisionError):  # A bug keeps its traceback.
    cli_errors.run(fails(ZeroDivisionError()), [])
  assert cli_errors.run(lambda argv: None, []) == 0
  assert os.environ.get(cli_errors.VERBOSE_ENV) is None
