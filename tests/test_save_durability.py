"""Durable, atomic ``save_model``: killed writers, interrupts, stale temporaries, folder fsync (issue #11)."""

from __future__ import annotations

import functools
import os
import random
import signal
import stat
import time

import numpy as np
import pytest

import loom
from loom.nn import serialization

CONFIG = {
    "batch_size": 1,
    "grid_rows": 1,
    "grid_cols": 1,
    "layers_per_cell": 2,
    "layers": [{"type": "dense", "input_size": 64, "output_size": 48}, {"type": "dense", "output_size": 8}],
}


def _slow_fsync(real_fsync, fd: int) -> None:
    time.sleep(0.05)
    real_fsync(fd)


def _temporaries(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "model.json")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sigkill_during_save_keeps_a_loadable_file_and_the_next_save_cleans_up(tmp_path) -> None:
    """20 writers killed at random moments: the file always loads whole (old or new), no temporary survives."""
    nets = [loom.create_network_from_json(CONFIG, seed=s) for s in (1, 2)]
    texts = [net.save_model_to_string("m") for net in nets]
    path = tmp_path / "model.json"
    nets[0].save_model(path, "m")
    rng = random.Random(7)
    killed_mid_write = 0
    for attempt in range(20):
        pid = os.fork()
        if pid == 0:  # the writer: alternate the two networks forever; a slow disk's fsync takes a while
            os.fsync = functools.partial(_slow_fsync, os.fsync)
            try:
                for i in range(10**6):
                    nets[i % 2].save_model(path, "m")
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        assert path.read_text() in texts  # whole, never a mix
        loaded = loom.load_model(path, "m")
        x = np.linspace(-1, 1, 64, dtype=np.float32)
        assert any(np.array_equal(loom.to_numpy(loaded.forward(x)), loom.to_numpy(n.forward(x))) for n in nets)
        killed_mid_write += bool(_temporaries(tmp_path))
        nets[attempt % 2].save_model(path, "m")  # the next save removes the dead writer's temporary
        assert _temporaries(tmp_path) == []
    assert killed_mid_write >= 3, "the kills never landed while a temporary file existed"


def test_interrupt_and_errors_remove_the_temporary(tmp_path, monkeypatch) -> None:
    net = loom.create_network_from_json(CONFIG, seed=1)
    path = tmp_path / "model.json"
    net.save_model(path, "m")
    before = path.read_text()
    other = loom.create_network_from_json(CONFIG, seed=2)
    for failure in (KeyboardInterrupt(), OSError(28, "No space left on device")):

        def fail(*args, exc=failure):
            raise exc

        monkeypatch.setattr(serialization.os, "replace", fail)
        with pytest.raises(type(failure)):
            other.save_model(path, "m")
        assert path.read_text() == before
        assert _temporaries(tmp_path) == []
        monkeypatch.undo()


def test_only_temporaries_of_dead_loom_writers_are_removed(tmp_path) -> None:
    path = tmp_path / "model.json"
    dead = 2**22 + 12345  # above the default pid_max range of most systems
    while True:
        try:
            os.kill(dead, 0)
            dead += 1
        except ProcessLookupError:
            break
        except PermissionError:
            dead += 1
    names = {
        f".model.json.loom-{dead}-abc_12.tmp": False,  # a killed loom writer: removed
        f".model.json.loom-{os.getppid()}-live0.tmp": True,  # a running writer: kept
        ".model.json.tmp": True,  # not loom's pattern
        ".model.json.loom-abc.tmp": True,
        ".other.json.loom-1-x.tmp": True,  # another target's
        "notes.tmp": True,
    }
    for name in names:
        (tmp_path / name).write_text("x")
    loom.create_network_from_json(CONFIG, seed=1).save_model(path, "m")
    assert _temporaries(tmp_path) == sorted(name for name, kept in names.items() if kept)


def test_the_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch) -> None:
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(serialization.os, "fsync", fsync)
    monkeypatch.setattr(serialization.os, "replace", replace)
    loom.create_network_from_json(CONFIG, seed=1).save_model(tmp_path / "model.json", "m")
    assert events == ["fsync file", "rename", "fsync folder"]
