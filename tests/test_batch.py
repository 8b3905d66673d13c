"""Batch runs: input expansion, detect_many on one process, local processes and a Dask
LocalCluster, streamed output parsed back, resume after a kill, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import skimage.data

import patternfind
from patternfind import io
from patternfind.batch import detect_many, expand_inputs
from patternfind.batch.outputs import completed_images
from patternfind.cli import main

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
EYE = str(SAMPLES / "eye.npy")
CORRUPT = ("c_truncated.png", "f_text.png", "k_empty.jpg")


def _make_folder(folder: Path, count: int, *, size: int = 160, corrupt: bool = True) -> list[str]:
    """``count`` crops of the astronaut's face at different offsets, plus broken files."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = skimage.data.astronaut()
    rng = np.random.default_rng(0)
    names = []
    for index in range(count):
        top, left = rng.integers(20, 60), rng.integers(140, 200)
        name = folder / f"img_{index:04d}.png"
        io.save_image(name, photo[top:top + size, left:left + size])
        names.append(str(name))
    if corrupt:
        data = Path(names[0]).read_bytes()
        (folder / CORRUPT[0]).write_bytes(data[: len(data) // 3])
        (folder / CORRUPT[1]).write_text("not an image")
        (folder / CORRUPT[2]).write_bytes(b"")
        (folder / "notes.txt").write_text("a file that is not an image")
    return names


def _as_table(results):
    """{image: (error, [(label, x, y, w, h, score), ...])} for comparing runs."""
    return {r.image: (r.error, [(d.label, d.x, d.y, d.w, d.h, round(d.score, 6))
                                for d in r.detections]) for r in results}


# ---------------------------------------------------------------- inputs


def test_expand_inputs_files_folders_globs_and_lists(tmp_path):
    names = _make_folder(tmp_path / "plate", 3)
    nested = _make_folder(tmp_path / "plate" / "sub", 2, corrupt=False)
    listed = tmp_path / "list.txt"
    listed.write_text(f"# chosen images\n\nplate/img_0001.png\n{names[2]}\nplate/gone.png\n")

    flat = expand_inputs([str(tmp_path / "plate")])
    images = sorted(names + [str(tmp_path / "plate" / n) for n in CORRUPT])
    assert list(flat.paths) == images
    assert flat.skipped == 1  # notes.txt

    deep = expand_inputs([str(tmp_path / "plate")], recursive=True)
    assert list(deep.paths) == sorted(images + nested)

    pattern = expand_inputs([str(tmp_path / "plate" / "img_*.png")])
    assert list(pattern.paths) == names

    from_list = expand_inputs([f"@{listed}", names[0], names[2]])
    assert list(from_list.paths) == [str(tmp_path / "plate" / "img_0001.png"), names[2],
                                     str(tmp_path / "plate" / "gone.png"), names[0]]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: [str(root)], "holds no image file"),
        (lambda root: [str(root / "*.png")], "matches no image"),
        (lambda root: [f"@{root / 'absent.txt'}"], "list file not found"),
        (lambda root: [], "no images given"),
    ],
)
def test_expand_inputs_refuses_what_names_nothing(tmp_path, make, message):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        expand_inputs(make(tmp_path))


# ---------------------------------------------------------------- engines


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    _make_folder(root, 12)
    return root


@pytest.fixture(scope="module")
def dask_client():
    pytest.importorskip("distributed")
    from patternfind.batch.cluster import dask_client

    with dask_client("local", workers=2) as client:
        yield client


def test_serial_processes_and_dask_agree_with_detect(folder, dask_client):
    paths = expand_inputs([str(folder)]).paths
    serial = list(detect_many(paths, EYE, jobs=1))
    in_processes = list(detect_many(paths, EYE, jobs=2))
    on_dask = list(detect_many(paths, EYE, client=dask_client))
    sent = list(detect_many(paths, EYE, client=dask_client, send_bytes=True))

    expected = {}
    for path in paths:
        try:
            expected[path] = (None, patternfind.detect(path, EYE))
        except ValueError as error:
            expected[path] = (str(error), [])
    table = _as_table(serial)
    assert set(table) == set(paths)
    assert _as_table(in_processes) == table == _as_table(on_dask) == _as_table(sent)
    for path, (error, found) in expected.items():
        assert (table[path][0] is not None) == (error is not None)
        assert [row[1:5] for row in table[path][1]] == [(d.x, d.y, d.w, d.h) for d in found]
    failed = {Path(path).name for path, (error, _) in table.items() if error}
    assert failed == set(CORRUPT)
    assert sum(len(found) for _, found in table.values()) >= 12  # every crop shows an eye


def test_ordered_results_follow_the_input_and_arrays_work(folder):
    paths = list(expand_inputs([str(folder)]).paths)
    reordered = [r.image for r in detect_many(paths, EYE, jobs=2, ordered=True)]
    assert reordered == paths
    photo = skimage.data.astronaut()
    results = list(detect_many([photo, np.roll(photo, 15, axis=1)], EYE, jobs=1, ordered=True))
    assert [r.image for r in results] == ["0", "1"]
    assert [len(r.detections) for r in results] == [2, 2]
    assert (results[0].width, results[0].height) == (512, 512)


def test_results_do_not_depend_on_jobs_with_options(folder):
    paths = expand_inputs([str(folder)]).paths
    one = _as_table(detect_many(paths, EYE, jobs=1, threshold=0.6, scales=(0.8, 1.25)))
    two = _as_table(detect_many(paths, EYE, jobs=2, threshold=0.6, scales=(0.8, 1.25)))
    assert one == two


def test_bad_options_fail_before_any_image(tmp_path):
    with pytest.raises(ValueError, match="jobs"):
        list(detect_many([str(tmp_path / "x.png")], EYE, jobs=0))
    with pytest.raises(ValueError, match="must be in"):
        list(detect_many([str(tmp_path / "x.png")], EYE, threshold=1.5))


# ---------------------------------------------------------------- CLI output and resume


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "patternfind", *map(str, args)],
                          capture_output=True, text=True, timeout=300, check=False)


def _records(path):
    return {record["image"]: record for record in map(json.loads, path.read_text().splitlines())}


def test_jsonl_and_csv_outputs_parse_back(folder, tmp_path, capsys):
    jsonl, table = tmp_path / "out.jsonl", tmp_path / "out.csv"
    assert main([str(folder), "--filter", EYE, "--format", "jsonl", "-o", str(jsonl),
                 "--jobs", "2", "--quiet"]) == 1  # corrupt files fail
    records = _records(jsonl)
    paths = expand_inputs([str(folder)]).paths
    assert set(records) == set(paths)
    for path in paths:
        record = records[path]
        if Path(path).name in CORRUPT:
            assert set(record) == {"image", "error"}
            continue
        found = patternfind.detect(path, EYE)
        assert (record["width"], record["height"]) == (160, 160)
        assert [d["x"] for d in record["detections"]] == [d.x for d in found]

    assert main([str(folder), "--filter", EYE, "--format", "csv", "-o", str(table),
                 "--jobs", "1", "--quiet"]) == 1
    import csv

    rows = list(csv.DictReader(table.read_text().splitlines()))
    assert {row["image"] for row in rows} == set(paths)
    assert sum(bool(row["label"]) for row in rows) == sum(
        len(r["detections"]) for r in records.values() if "detections" in r)
    assert {Path(row["image"]).name for row in rows if row["error"]} == set(CORRUPT)


def _killed_then_resumed(folder, output, kind, sig, after_lines):
    """Start a run, kill it with ``sig`` once ``after_lines`` lines are out, then resume."""
    command = [sys.executable, "-m", "patternfind", str(folder), "--filter", EYE,
               "--format", kind, "-o", str(output), "--jobs", "1", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if output.exists() and output.read_text().count("\n") >= after_lines:
            break
        time.sleep(0.005)
    if process.poll() is None:
        process.send_signal(sig)
    process.wait(timeout=60)
    resumed = _run_cli(*command[3:], "--resume")
    assert resumed.returncode in (0, 1), resumed.stderr  # 1 if corrupt files were left to do
    assert "Traceback" not in resumed.stderr


@pytest.fixture(scope="module")
def uninterrupted(folder, tmp_path_factory):
    """The jsonl output of an uninterrupted run over ``folder``."""
    reference = tmp_path_factory.mktemp("reference") / "reference.jsonl"
    assert _run_cli(folder, "--filter", EYE, "--format", "jsonl", "-o", reference,
                    "--jobs", "1", "--quiet").returncode == 1
    return reference


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
@pytest.mark.parametrize("after_lines", [0, 5, 10_000])
def test_a_killed_run_resumes_to_the_uninterrupted_output(folder, tmp_path, uninterrupted,
                                                          sig, after_lines):
    reference = uninterrupted
    output = tmp_path / "killed.jsonl"
    _killed_then_resumed(folder, output, "jsonl", sig, after_lines)
    lines = output.read_text().splitlines()
    assert len(lines) == len(set(lines)) == len(reference.read_text().splitlines())
    assert _records(output) == _records(reference)


@pytest.mark.slow
def test_a_killed_csv_run_resumes_to_the_uninterrupted_rows(folder, tmp_path):
    reference, output = tmp_path / "reference.csv", tmp_path / "killed.csv"
    _run_cli(folder, "--filter", EYE, "--format", "csv", "-o", reference, "--jobs", "1")
    _killed_then_resumed(folder, output, "csv", signal.SIGKILL, 6)
    assert sorted(output.read_text().splitlines()) == sorted(reference.read_text().splitlines())


def test_resume_drops_a_partial_last_line_and_redoes_its_image(folder, tmp_path, capsys):
    paths = expand_inputs([str(folder)]).paths
    reference = tmp_path / "reference.jsonl"
    main([str(folder), "--filter", EYE, "--format", "jsonl", "-o", str(reference),
          "--jobs", "1", "--quiet"])
    lines = reference.read_text().splitlines(keepends=True)
    output = tmp_path / "partial.jsonl"
    output.write_text("".join(lines[:4]) + lines[4][: len(lines[4]) // 2])  # killed mid-line
    assert completed_images(output, "jsonl") == {json.loads(line)["image"] for line in lines[:4]}
    assert output.read_text() == "".join(lines[:4])  # the partial line is gone
    main([str(folder), "--filter", EYE, "--format", "jsonl", "-o", str(output), "--resume",
          "--jobs", "1", "--quiet"])
    assert _records(output) == _records(reference)
    assert len(output.read_text().splitlines()) == len(paths)

    reference_csv, output_csv = tmp_path / "reference.csv", tmp_path / "partial.csv"
    main([str(folder), "--filter", EYE, "--format", "csv", "-o", str(reference_csv),
          "--jobs", "1", "--quiet"])
    text = reference_csv.read_text()
    output_csv.write_text(text[: len(text) * 2 // 3])  # most likely mid-row
    main([str(folder), "--filter", EYE, "--format", "csv", "-o", str(output_csv), "--resume",
          "--jobs", "1", "--quiet"])
    assert sorted(output_csv.read_text().splitlines()) == sorted(text.splitlines())


@pytest.mark.slow
def test_coco_output_is_never_half_written(tmp_path):
    output = tmp_path / "out" / "found.json"
    output.parent.mkdir()
    many = tmp_path / "many"
    _make_folder(many, 300, corrupt=False)
    process = subprocess.Popen(
        [sys.executable, "-m", "patternfind", str(many), "--filter", EYE, "--format", "coco",
         "-o", str(output), "--jobs", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill the run while its document is being written: the temporary file exists.
    deadline = time.monotonic() + 120
    while not any("partial" in p.name for p in output.parent.iterdir()):
        assert process.poll() is None, "the run ended before it was seen writing"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    process.kill()
    process.wait(timeout=60)
    assert not output.exists()
    assert main([str(many), "--filter", EYE, "--format", "coco", "-o", str(output),
                 "--quiet"]) == 0
    results = json.loads(output.read_text())
    assert len({r["image_id"] for r in results}) == 300


# ---------------------------------------------------------------- memory


_RSS_SCRIPT = """
import resource, sys
from patternfind.batch import detect_many, expand_inputs
paths = expand_inputs([sys.argv[1]]).paths[: int(sys.argv[2])]
count = sum(len(r.detections) for r in detect_many(paths, sys.argv[3], jobs=2))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, count)
"""


@pytest.mark.slow
def test_main_process_memory_does_not_grow_with_the_image_count(tmp_path):
    folder = tmp_path / "small"
    folder.mkdir()
    tile = skimage.data.astronaut()[60:124, 160:224]
    for index in range(2000):
        io.save_image(folder / f"{index:05d}.png", np.roll(tile, index % 7, axis=1))

    def peak_kib(count):
        out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(folder), str(count), EYE],
                             capture_output=True, text=True, check=True, timeout=600).stdout
        return int(out.split()[0])

    small, large = peak_kib(200), peak_kib(2000)
    assert large - small < 20 * 1024, (small, large)  # KiB: under 20 MiB of growth


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--jobs", "0"], "--jobs must be"),
        (["--jobs", "-2"], "--jobs must be"),
        (["--resume"], "--resume needs"),
        (["--format", "json", "-o", "out.json", "--resume"], "--resume needs"),
        (["--send-bytes"], "--send-bytes goes with --scheduler"),
        (["-o", "no/such/folder/out.jsonl", "--format", "jsonl"], "no/such/folder"),
    ],
)
def test_bad_run_options_are_one_line_and_exit_2(folder, capsys, extra, message):
    assert main([str(folder), "--filter", EYE, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_empty_folder_glob_and_missing_list_exit_2(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in ([str(empty)], [str(tmp_path / "*.png")], [f"@{tmp_path / 'none.txt'}"]):
        assert main([*args, "--filter", EYE]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1
        assert "Traceback" not in err


def test_list_naming_missing_files_gives_error_records(tmp_path, capsys):
    listed = tmp_path / "list.txt"
    listed.write_text(f"{SAMPLES / 'astronaut.png'}\nmissing.png\n")
    output = tmp_path / "out.jsonl"
    assert main([f"@{listed}", "--filter", EYE, "--format", "jsonl", "-o", str(output)]) == 1
    records = _records(output)
    assert records[str(tmp_path / "missing.png")]["error"].startswith("image file not found")
    assert len(records[str(SAMPLES / "astronaut.png")]["detections"]) == 2


def test_resume_refuses_output_of_another_format(folder, tmp_path, capsys):
    output = tmp_path / "out.jsonl"
    output.write_text("image,label,x,y,w,h,score,scale,error\nfoo.png,,,,,,,,\n")
    assert main([str(folder), "--filter", EYE, "--format", "jsonl", "-o", str(output),
                 "--resume"]) == 2
    assert "not a jsonl record" in capsys.readouterr().err
    output.write_text('{"image": "a.png", "detections": []}\n')
    assert main([str(folder), "--filter", EYE, "--format", "csv", "-o", str(output),
                 "--resume"]) == 2
    assert "not csv output" in capsys.readouterr().err


def test_scheduler_that_does_not_answer_is_a_clear_error(folder, capsys):
    pytest.importorskip("distributed")
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    assert main([str(folder), "--filter", EYE, "--scheduler", f"tcp://127.0.0.1:{port}"]) == 2
    assert time.monotonic() - started < 60
    err = capsys.readouterr().err
    assert "no Dask scheduler answered" in err
    assert len(err.strip().splitlines()) == 1


def test_scheduler_without_dask_says_how_to_install(folder, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if dask were not installed
    monkeypatch.setitem(sys.modules, "dask", None)
    assert main([str(folder), "--filter", EYE, "--scheduler", "local"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "patternfind[dask]"' in err
    assert len(err.strip().splitlines()) == 1


def test_progress_bar_goes_to_stderr_when_asked(folder, capsys):
    main([str(folder), "--filter", EYE, "--format", "jsonl", "--progress", "--jobs", "1"])
    err = capsys.readouterr().err
    assert "image/s" in err  # the rate tqdm shows
    assert "failed=3" in err


def test_dask_cli_run_matches_serial(folder, tmp_path, capsys):
    pytest.importorskip("distributed")
    serial, on_dask = tmp_path / "serial.jsonl", tmp_path / "dask.jsonl"
    main([str(folder), "--filter", EYE, "--format", "jsonl", "-o", str(serial), "--jobs", "1"])
    assert main([str(folder), "--filter", EYE, "--format", "jsonl", "-o", str(on_dask),
                 "--scheduler", "local", "--jobs", "2", "--quiet"]) == 1
    assert _records(on_dask) == _records(serial)
    assert os.path.getsize(on_dask) == os.path.getsize(serial)


def test_readme_many_images_commands_run_as_written(tmp_path):
    import re
    import shlex
    import shutil

    pytest.importorskip("distributed")
    readme = (SAMPLES.parent / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.DOTALL)
    commands = [block.strip() for block in blocks if "samples/many" in block]
    assert len(commands) == 3  # a run, a resumed run, a Dask run
    shutil.copytree(SAMPLES / "many", tmp_path / "samples" / "many")
    shutil.copy(SAMPLES / "eye.npy", tmp_path / "samples" / "eye.npy")
    for command in commands:
        words = shlex.split(command)
        assert words[0] == "patternfind"
        done = subprocess.run([sys.executable, "-m", "patternfind", *words[1:]], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        records = _records(tmp_path / "found.jsonl")
        assert len(records) == 24
        assert all(len(record["detections"]) == 2 for record in records.values())
        assert len((tmp_path / "found.jsonl").read_text().splitlines()) == 24


def test_the_cli_offers_every_output_format():
    from patternfind.batch.outputs import FORMATS
    from patternfind.cli import detect_cmd

    assert detect_cmd.FORMATS == FORMATS


def _without_timing(summaries):
    return [{key: value for key, value in s.items() if key not in ("seconds_per_image",)}
            for s in summaries]


def test_compare_and_evaluate_in_parallel_give_the_serial_numbers(capsys):
    pytest.importorskip("distributed")
    coins = SAMPLES / "coins"
    common = ["compare", "--annotations", str(coins / "coins.json"), "--filter",
              str(coins / "coin.npz"), "--filter", str(coins / "disc.npz"), "--format", "json"]
    runs = []
    for extra in ([], ["--jobs", "2"], ["--scheduler", "local", "--jobs", "2"]):
        assert main([*common, *extra]) == 0
        runs.append(_without_timing(json.loads(capsys.readouterr().out)))
    assert runs[0] == runs[1] == runs[2]
    assert [run["ap"] for run in runs[0]] == pytest.approx([1.0, 0.997], abs=5e-4)

    single = ["evaluate", "--annotations", str(coins / "coins.json"), "--filter",
              str(coins / "coin.npz"), "--format", "json"]
    assert main(single) == 0
    serial = _without_timing([json.loads(capsys.readouterr().out)])
    assert main([*single, "--jobs", "2"]) == 0
    assert _without_timing([json.loads(capsys.readouterr().out)]) == serial


def test_parallel_compare_names_an_unreadable_image(tmp_path):
    from patternfind.batch import search_images
    from patternfind.evaluation import compare

    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    truth = {"good": [patternfind.Box(192, 93, 22, 14)], "bad": []}
    images = {"good": str(SAMPLES / "astronaut.png"), "bad": str(bad)}
    with pytest.raises(ValueError, match="image 'bad': cannot read"):
        search_images(images, patternfind.load_filter(EYE), {}, jobs=1)
    (result,) = compare(EYE, {"good": truth["good"]}, images={"good": images["good"]},
                        search=lambda i, f, o: search_images(i, f, o, jobs=2))
    assert result.recall == 1.0
