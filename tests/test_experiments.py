"""The train.py app's parts that its end-to-end tests reach only by a kill or a
full disk: the fault hook's own checks and the atomic write."""

import errno
import os
import signal
import subprocess
import sys

import pytest

from keras_lstm.experiments import atomic, faults


def test_an_unknown_crash_moment_is_refused(monkeypatch):
    monkeypatch.setenv(faults.CRASH_AT, "epoch_ends:2")
    with pytest.raises(ValueError, match="expected <moment>\\[:<epoch>\\]"):
        faults.check_crash_at()
    monkeypatch.setenv(faults.CRASH_AT, "epoch_end:two")
    with pytest.raises(ValueError, match="'epoch_end:two'"):
        faults.check_crash_at()
    for spec in ("epoch_end", "epoch_end:2", ""):
        monkeypatch.setenv(faults.CRASH_AT, spec)
        faults.check_crash_at()


@pytest.mark.parametrize(
    "spec, moment, epoch, killed",
    [
        ("best_write", "best_write", None, True),
        ("best_write", "best_write", 1, True),  # without an epoch: the first
        ("best_write", "best_write", 2, False),
        ("best_write:2", "best_write", 2, True),
        ("best_write:2", "best_saved", 2, False),
    ],
)
def test_crash_at_kills_only_at_the_named_moment_and_epoch(spec, moment, epoch, killed):
    # faults.py loaded from its file: importing the package would load Keras.
    code = (
        "import importlib.util as u; "
        f"s = u.spec_from_file_location('faults', {faults.__file__!r}); "
        "faults = u.module_from_spec(s); s.loader.exec_module(faults); "
        f"faults.crash_at({moment!r}, {epoch!r}); print('alive')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ, **{faults.CRASH_AT: spec}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if killed:
        assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
        assert result.stdout == ""
    else:
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout == "alive\n"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "state.json"
    atomic.write_json({"epoch": 1}, str(path))
    before = path.read_bytes()

    def full_disk(tmp):
        with open(tmp, "w") as f:
            f.write('{"epo')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), tmp)

    with pytest.raises(atomic.WriteError) as info:
        atomic.save_atomically(full_disk, str(path))
    assert info.value.path == str(path)
    assert str(info.value) == f"cannot write {path} (No space left on device)"
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


def test_write_json_replaces_a_temporary_file_left_by_a_kill(tmp_path):
    (tmp_path / "metrics.tmp.json").write_text('{"half": ')
    atomic.write_json({"b": 2, "a": 1}, str(tmp_path / "metrics.json"))
    assert (tmp_path / "metrics.json").read_text() == '{\n  "a": 1,\n  "b": 2\n}\n'
    assert sorted(os.listdir(tmp_path)) == ["metrics.json"]
