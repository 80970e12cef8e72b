"""Runs that survive (issue 7): atomic files, exact resume after SIGKILL, Ctrl-C, safe loading,
divergence, failed saves. Tiny configurations (32 px, ngf/ndf 4, batch 2) with random weights
on purpose (no VGG, no NADS-Net guidance); nothing is downloaded.

Training runs happen in-process through the scripts' `main` (stderr captured), except where a
real process must be killed or interrupted. Everything runs on one CPU thread (in-process and
in the subprocesses alike): faster on a loaded machine, and the same arithmetic everywhere.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from common.training.checkpoints import load_file, save_network
from common.errors import CheckpointError
from common.training.files import save_atomic, write_text_atomic
from common.models.factory import build_discriminator, build_generator, discriminator_config, generator_config

from conftest import SINGLE_THREAD_ENV

ROOT = Path(__file__).resolve().parents[1]
MARKER_NAME = "code_ran.txt"


# Subprocess and in-process runs on one thread: faster and steadier on a loaded 2-core machine.
pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- helpers


def gan_args(data, checkpoints: Path, *extra: str) -> list[str]:
    """train_gan.py options for a run of a few seconds: 32 px, ngf/ndf 4, no VGG, no guidance."""
    return [
        "--train-annotations", str(data.annotation_file),
        "--images-dir", str(data.images_dir),
        "--masks-dir", str(data.masks_dir),
        "--checkpoints-dir", str(checkpoints),
        "--preset", "cpu", "--amp", "off", "--seed", "3",
        "--image-size", "32", "--ngf", "4", "--ndf", "4", "--batch-size", "2",
        "--niter", "1", "--niter-decay", "0", "--num-workers", "0",
        "--print-freq", "1", "--display-freq", "1000", "--save-latest-freq", "2", "--save-epoch-freq", "100",
        "--no-vgg-loss", "--nadsnet-weights", "none", "--no-html",
        *extra,
    ]


def run_gan(argv: list[str]) -> int:
    from gan.train import main

    return main(argv)


def nadsnet_data(tiny_dataset_dir, train: int, valid: int = 1):
    """A tiny dataset with train and validation JSON files over the same image folders;
    the `annotation_file` of the returned object is the training one."""
    data = tiny_dataset_dir(num_images=train + valid, width=96, height=80)
    persons = [a for a in data.annotations if a["label"] == "Person"]
    data.valid_file = data.root / "valid.json"
    data.valid_file.write_text(json.dumps({"annotations": persons[train:]}))
    data.annotation_file = data.root / "train.json"
    data.write_annotations({"annotations": persons[:train]})
    return data


def nadsnet_args(data, checkpoints: Path, *extra: str) -> list[str]:
    """train_nadsnet.py options for a run of a few seconds: 32 px, batch 2, plain training."""
    return [
        "--train-annotations", str(data.annotation_file), "--valid-annotations", str(data.valid_file),
        "--images-dir", str(data.images_dir), "--masks-dir", str(data.masks_dir),
        "--checkpoints-dir", str(checkpoints),
        "--preset", "cpu", "--amp", "off", "--seed", "3", "--image-size", "32", "--batch-size", "2", "--epochs", "1",
        "--num-workers", "0", "--gan-fraction", "0", "--arm-augment", "none", "--save-latest-freq", "1",
        "--display-samples", "1", "--no-html",
        *extra,
    ]


def run_nadsnet(argv: list[str]) -> int:
    from nadsnet_pvt.train import main

    return main(argv)


def tiny_generator_file(path: Path, ngf: int = 2, size: int = 32) -> Path:
    """A SPADE generator with random weights (on purpose) saved with its configuration."""
    torch.manual_seed(0)
    config = generator_config(ngf, size)
    save_network(build_generator(config), path, config)
    return path


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` (relative path -> bytes), but the folder's lock (which names
    the run holding it)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != ".run.lock"}


PROGRESS_BAR = re.compile(r"\|\s*\d+/\d+ \[")


def error_lines(stderr: str) -> list[str]:
    """Non-empty stderr lines, without tqdm's progress bar redraws (cleared when a bar closes)."""
    pieces = [piece for line in stderr.splitlines() for piece in line.split("\r")]
    return [piece for piece in pieces if piece.strip() and not PROGRESS_BAR.search(piece)]


def one_error_line(stderr: str) -> str:
    """The single line a failed run prints on stderr (no traceback, nothing else)."""
    lines = error_lines(stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    return lines[0]


class CodeCarrier:
    """Unpickling this object would run code (create a marker file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_code_carrying_file(path: Path, marker: Path, payload: dict | None = None) -> Path:
    """A torch file whose pickle would run `touch marker` if loaded without weights_only."""
    content = dict(payload or {"weight": torch.zeros(2)})
    content["extra"] = CodeCarrier(marker)
    torch.save(content, path)
    return path


def state_of(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in net.state_dict().items()}


def assert_same_weights(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=atol, msg=key)


def no_temporaries(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.tmp"))


# --------------------------------------------------------------------------- atomic writes


@pytest.mark.parametrize("failing_call", ["fsync", "replace"])
def test_failed_atomic_write_keeps_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch, failing_call):
    target = tmp_path / "state.pth"
    save_atomic({"step": torch.tensor(1)}, target)
    before = target.read_bytes()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, failing_call, no_space)
    with pytest.raises(CheckpointError) as excinfo:
        save_atomic({"step": torch.tensor(2)}, target)
    monkeypatch.undo()
    message = str(excinfo.value)
    assert "\n" not in message and str(target) in message and "No space left on device" in message
    assert target.read_bytes() == before
    assert load_file(target)["step"].item() == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pth"]


def test_write_that_raises_midway_keeps_previous_text(tmp_path):
    target = write_text_atomic("old\n", tmp_path / "iter.txt")

    def half_then_fail(handle):
        handle.write(b"ne")
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    from common.training.files import write_atomic

    with pytest.raises(CheckpointError, match="Read-only file system"):
        write_atomic(target, half_then_fail)
    assert target.read_text() == "old\n" and not no_temporaries(tmp_path)


def test_pictures_and_pages_are_renamed_into_place_without_fsync(tmp_path, monkeypatch):
    from common.posedata.visualize import PageSection, save_png, write_page

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    write_text_atomic("state\n", tmp_path / "iter.txt")
    assert len(synced) == 2  # the file and its folder
    synced.clear()
    save_png(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    write_page(tmp_path / "index.html", "page", [PageSection("one", [("a.png", "a")])])
    assert synced == [] and (tmp_path / "a.png").stat().st_size > 0 and "a.png" in (tmp_path / "index.html").read_text()
    assert not no_temporaries(tmp_path)


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_written_files_get_the_mode_the_umask_gives(tmp_path, umask):
    # The umask is read once at start-up: a fresh interpreter under each umask.
    script = ("import os, sys, numpy as np; from common.training.files import write_text_atomic, save_atomic; "
              "from common.posedata.visualize import save_png; out = sys.argv[1]; "
              "write_text_atomic('x', out + '/a.txt'); save_atomic({'w': 1}, out + '/b.pth'); "
              "save_png(out + '/c.png', np.zeros((2, 2, 3), np.uint8)); open(out + '/plain.txt', 'w').close()")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=Path(__file__).resolve().parents[1],
                            env=SINGLE_THREAD_ENV, capture_output=True, text=True, timeout=120,
                            preexec_fn=lambda: os.umask(umask))
    assert result.returncode == 0, result.stderr
    modes = {path.name: path.stat().st_mode & 0o777 for path in tmp_path.iterdir()}
    assert modes["plain.txt"] == 0o666 & ~umask
    assert modes == dict.fromkeys(["a.txt", "b.pth", "c.png", "plain.txt"], 0o666 & ~umask)


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    from common.training.files import remove_stale_temporaries

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".gan_train_state.pth.{dead_pid}.x1y2.tmp"
    stale_picture = tmp_path / "web" / "images" / f".epoch001_iter000002_real_image.png.{dead_pid}.c5d6.tmp"
    live = tmp_path / f".latest_net_G.pth.{os.getpid()}.a3b4.tmp"
    other = tmp_path / ".notes.tmp"  # not one of write_atomic's names: left alone
    stale_picture.parent.mkdir(parents=True)
    for path in (stale, stale_picture, live, other):
        path.write_bytes(b"half")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted([stale, stale_picture])
    assert not stale.exists() and not stale_picture.exists() and live.exists() and other.exists()


# --------------------------------------------------------------------------- safe loading


def test_code_carrying_files_are_refused_and_never_run(tiny_dataset_dir, tmp_path, capsys):
    """--nadsnet-weights and a --continue-train state that carry code: one line, nothing runs,
    nothing is written."""
    data = tiny_dataset_dir(num_images=2, width=96, height=80)
    marker = tmp_path / MARKER_NAME
    weights = write_code_carrying_file(tmp_path / "nadsnet_best.pth", marker)
    checkpoints = tmp_path / "run"
    assert run_gan(gan_args(data, checkpoints, "--nadsnet-weights", str(weights))) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "refused to load" in line and str(weights) in line and "weights_only" in line
    assert not marker.exists() and not checkpoints.exists()

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    write_code_carrying_file(resumed / "gan_train_state.pth", marker, {"format": "pose-gan-train-state/1"})
    before = snapshot(resumed)
    assert run_gan(gan_args(data, resumed, "--continue-train")) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "refused to load training state" in line and "gan_train_state.pth" in line
    assert not marker.exists() and snapshot(resumed) == before

    # The files do carry code: an unsafe load runs it.
    torch.load(weights, weights_only=False)
    assert marker.exists()


def test_mismatched_checkpoints_name_the_fitting_configuration(tiny_dataset_dir, tmp_path, capsys):
    data = tiny_dataset_dir(num_images=2, width=96, height=80)
    # A seed-layout latest_net_G.pth of ngf 8 continued with --ngf 4: shapes differ.
    wide = tmp_path / "wide"
    wide.mkdir()
    torch.save(build_generator(generator_config(8, 64)).state_dict(), wide / "latest_net_G.pth")
    assert run_gan(gan_args(data, wide, "--continue-train")) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "latest_net_G.pth does not fit" in line and "shape mismatch" in line and "--ngf 8" in line

    # A discriminator with 3 layers where 4 are expected: missing keys listed, fitting flags named.
    shallow = tmp_path / "shallow"
    shallow.mkdir()
    torch.save(build_generator(generator_config(4, 64, spade_hidden=32)).state_dict(), shallow / "latest_net_G.pth")
    torch.save(build_discriminator(discriminator_config(4, n_layers=3)).state_dict(), shallow / "latest_net_D.pth")
    assert run_gan(gan_args(data, shallow, "--continue-train")) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "latest_net_D.pth does not fit" in line and "missing from the checkpoint, 10 keys: discriminator_0.model3.0.0.weight_orig" in line
    assert "unexpected in the checkpoint, 4 keys: discriminator_0.model3.0.weight" in line
    assert "it fits --n-layers-d 3 (this run differs in each)" in line  # only what differs from this run

    # A generator with an extra up-sampling level: unexpected keys listed.
    deeper = tmp_path / "deeper"
    deeper.mkdir()
    torch.save(build_generator(generator_config(4, 128, "most", spade_hidden=32)).state_dict(), deeper / "latest_net_G.pth")
    assert run_gan(gan_args(data, deeper, "--continue-train")) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "unexpected in the checkpoint, " in line and "up_4." in line and "it fits --num-upsampling-layers most (this run differs in each)" in line

    # A generator file given as NADS-Net weights: says what the file holds.
    generator_file = tmp_path / "g.pth"
    save_network(build_generator(generator_config(4, 64)), generator_file, generator_config(4, 64))
    assert run_gan(gan_args(data, tmp_path / "other", "--nadsnet-weights", str(generator_file))) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "is not a NADS-Net" in line and "SPADEGenerator" in line
    assert not (tmp_path / "other").exists()


def test_training_state_saved_with_other_options_is_refused(tiny_dataset_dir, tmp_path, capsys):
    data = tiny_dataset_dir(num_images=4, width=96, height=80)
    checkpoints = tmp_path / "run"
    assert run_gan(gan_args(data, checkpoints, "--max-iterations", "1", "--save-latest-freq", "1")) == 0
    capsys.readouterr()
    before = snapshot(checkpoints)
    assert run_gan(gan_args(data, checkpoints, "--continue-train", "--ngf", "8")) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "gan_train_state.pth (generator) does not fit" in line and "it fits --ngf 4 (this run differs in each)" in line
    assert run_gan(gan_args(data, checkpoints, "--continue-train", "--seed", "4")) == 1
    assert "saved with --seed 3" in one_error_line(capsys.readouterr().err)
    assert snapshot(checkpoints) == before


# --------------------------------------------------------------------------- divergence


def _nan_on_call(monkeypatch, method: str, bad_call: int, on_bad=None, on_call=None):
    """Make GANModel.<method> return a NaN 'first' loss term on its `bad_call`-th call (1-based)."""
    from gan.model import GANModel

    original = getattr(GANModel, method)
    calls = {"n": 0}

    def patched(self, *args, **kwargs):
        calls["n"] += 1
        if on_call is not None:
            on_call(self, calls["n"])
        result = original(self, *args, **kwargs)
        if calls["n"] != bad_call:
            return result
        if on_bad is not None:
            on_bad(self)
        losses = result[0] if isinstance(result, tuple) else result
        first = next(iter(losses))
        losses[first] = losses[first] * float("nan")
        return result

    monkeypatch.setattr(GANModel, method, patched)
    return calls


def test_nonfinite_loss_stops_with_term_and_iteration_and_keeps_last_save(tiny_dataset_dir, tmp_path, monkeypatch, capsys):
    data = tiny_dataset_dir(num_images=8, width=96, height=80)
    checkpoints = tmp_path / "run"
    seen: dict[str, dict[str, bytes]] = {}
    # Iteration 3 (saves at 2): the generator's GAN term becomes NaN.
    _nan_on_call(monkeypatch, "generator_losses", 3, on_bad=lambda model: seen.update(files=snapshot(checkpoints)))
    assert run_gan(gan_args(data, checkpoints)) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "GAN = nan" in line and "generator step" in line and "epoch 1, iteration 3" in line
    assert "last save" in line and "intact" in line
    assert "gan_train_state.pth" in seen["files"]
    assert snapshot(checkpoints) == seen["files"]  # byte-identical: nothing written after the NaN
    assert load_file(checkpoints / "gan_train_state.pth")["progress"]["total_iterations"] == 2


@pytest.mark.parametrize("method, network", [("generator_losses", "generator"), ("discriminator_losses", "discriminator")])
def test_nonfinite_loss_skip_drops_the_update_and_continues(tiny_dataset_dir, tmp_path, monkeypatch, capsys, method, network):
    data = tiny_dataset_dir(num_images=8, width=96, height=80)
    checkpoints = tmp_path / "run"
    weights: dict[int, tuple] = {}

    def record(model, call):
        weights[call] = (state_of(model.netG), state_of(model.netD))
        weights["model"] = model

    calls = _nan_on_call(monkeypatch, method, 2, on_call=record)
    assert run_gan(gan_args(data, checkpoints, "--on-nonfinite", "skip")) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.out.splitlines() if "batch skipped" in line]
    assert len(warnings) == 1, captured.out
    assert "WARNING" in warnings[0] and "= nan" in warnings[0] and f"{network} step" in warnings[0]
    assert "epoch 1, iteration 2" in warnings[0]
    assert calls["n"] == 4  # every batch of the epoch was still visited
    g_before, d_before = weights[2]  # before the bad batch's steps
    g_after, d_after = weights[3]  # when the next batch starts
    if network == "generator":
        # Nothing changed at all: no update, D's step did not run, buffers restored.
        assert_same_weights(g_after, g_before, atol=0)
        assert_same_weights(d_after, d_before, atol=0)
    else:
        # G had stepped (and its D pass advanced D's spectral-norm vectors); D's weights did not move.
        d_parameters = [name for name, _ in weights["model"].netD.named_parameters()]
        assert_same_weights({k: d_after[k] for k in d_parameters}, {k: d_before[k] for k in d_parameters}, atol=0)
        assert any(not torch.equal(g_after[k], g_before[k]) for k in g_before)
    assert all(torch.isfinite(v).all() for v in state_of_file(checkpoints / "latest_net_G.pth").values())
    assert load_file(checkpoints / "gan_train_state.pth")["progress"]["skipped_batches"] == 1
    assert "1 batch(es) skipped" in captured.out


def state_of_file(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path)


# --------------------------------------------------------------------------- failed saves


def test_failed_save_is_one_line_and_previous_state_stays_loadable(tiny_dataset_dir, tmp_path, monkeypatch, capsys):
    data = tiny_dataset_dir(num_images=8, width=96, height=80)
    checkpoints = tmp_path / "run"
    real_replace = os.replace
    seen: dict[str, dict[str, bytes]] = {}

    def replace(source, target, *args, **kwargs):
        # The second save of the training state (iteration 4) meets a full disk.
        if Path(target).name == "gan_train_state.pth" and Path(target).exists():
            seen["files"] = snapshot(checkpoints)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    assert run_gan(gan_args(data, checkpoints)) == 1
    monkeypatch.undo()
    line = one_error_line(capsys.readouterr().err)
    assert str(checkpoints / "gan_train_state.pth") in line and "No space left on device" in line
    assert "previous file is unchanged" in line
    assert snapshot(checkpoints) == {k: v for k, v in seen["files"].items() if not k.endswith(".tmp")}
    assert not no_temporaries(checkpoints)
    state = load_file(checkpoints / "gan_train_state.pth")["progress"]
    assert (state["epoch"], state["epoch_batches"], state["total_iterations"]) == (1, 2, 2)
    load_file(checkpoints / "latest_net_G.pth")


# --------------------------------------------------------------------------- kill -9, Ctrl-C, exact resume


def _start(script: str, argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, script, *argv], cwd=ROOT, env=SINGLE_THREAD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"the run ended (rc {process.returncode}) before {path.name} appeared:\n{out}\n{err}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.01)


def test_sigterm_saves_like_ctrl_c_and_a_second_signal_stops_at_once(tiny_dataset_dir, tmp_path, monkeypatch, capfd):
    """In-process (the process signals itself during an iteration): SIGTERM finishes the
    iteration, saves and exits 143; SIGINT twice stops at once, exits 130 and saves nothing."""
    from gan.model import GANModel

    data = tiny_dataset_dir(num_images=8, width=96, height=80)
    original = GANModel.generator_losses
    plan = {"call": 0, "signals": ()}

    def signalling(self, *args, **kwargs):
        plan["call"] += 1
        if plan["call"] == 3:
            plan["files"] = snapshot(plan["directory"])
            for number in plan["signals"]:
                os.kill(os.getpid(), number)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GANModel, "generator_losses", signalling)
    plan.update(call=0, signals=(signal.SIGTERM,), directory=tmp_path / "term")
    assert run_gan(gan_args(data, tmp_path / "term")) == 143
    out, err = capfd.readouterr()
    assert "SIGTERM received: finishing this iteration" in err and "interrupted (SIGTERM): saved the state" in out
    assert load_file(tmp_path / "term" / "gan_train_state.pth")["progress"]["total_iterations"] == 3  # the iteration finished

    plan.update(call=0, signals=(signal.SIGINT, signal.SIGINT), directory=tmp_path / "twice")
    assert run_gan(gan_args(data, tmp_path / "twice")) == 130
    out, err = capfd.readouterr()
    assert "stopped at once" in err and "Traceback" not in err and "saved the state" not in out
    assert snapshot(tmp_path / "twice") == plan["files"]  # the save of iteration 2 is what is left
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_resume_after_sigkill_and_ctrl_c_matches_uninterrupted_run(tiny_dataset_dir, tmp_path):
    """Both scripts: a run killed with SIGKILL after its first (mid-epoch) save, and a GAN run
    that gets SIGINT, continue with --continue-train and must end with the weights of an
    uninterrupted run (to 1e-6). The three processes run at the same time. (NADS-Net's Ctrl-C
    path is the same code in-process: tests/test_train_nadsnet.py sends itself a SIGINT.)

    GAN: 8 images, batch 2 (4 batches per epoch), 3 epochs, a save every 3 iterations
    (iterations 3, 6, 9: all mid-epoch). NADS-Net: 12 images, batch 4 (3 batches per epoch),
    2 epochs, a save after every batch (the first at iteration 1, mid-epoch); half of every
    batch generated by a tiny generator, 'highly' arm poses, and the geometric augmentation, so
    every random draw of the recipe is covered.
    """
    gan = tiny_dataset_dir(num_images=8, width=96, height=80)
    gan_options = ("--niter", "3", "--save-latest-freq", "3")
    nadsnet = nadsnet_data(tiny_dataset_dir, train=12)
    generator = tiny_generator_file(tmp_path / "generator" / "latest_net_G.pth")
    nadsnet_options = ("--epochs", "2", "--batch-size", "4", "--gan-fraction", "0.5", "--generator-weights", str(generator),
                       "--arm-augment", "highly")
    runs = {
        ("gan", "kill"): (tmp_path / "gan_killed", "gan_train_state.pth"),
        ("gan", "int"): (tmp_path / "gan_interrupted", "gan_train_state.pth"),
        ("nadsnet", "kill"): (tmp_path / "nadsnet_killed", "nadsnet_train_state.pth"),
    }

    def argv(script: str, directory: Path, *extra: str) -> list[str]:
        if script == "gan":
            return gan_args(gan, directory, *gan_options, *extra)
        return nadsnet_args(nadsnet, directory, *nadsnet_options, *extra)

    processes = {
        key: _start("train_gan.py" if key[0] == "gan" else "train_nadsnet.py", argv(key[0], directory))
        for key, (directory, _) in runs.items()
    }

    problems: list[str] = []

    def signal_each_run_after_its_first_save() -> None:
        waiting = dict(runs)
        deadline = time.monotonic() + 240
        while waiting:
            for key, (directory, state_name) in list(waiting.items()):
                if (directory / state_name).exists():
                    processes[key].send_signal(signal.SIGKILL if key[1] == "kill" else signal.SIGINT)
                    del waiting[key]
                elif processes[key].poll() is not None or time.monotonic() > deadline:
                    problems.append(f"{key}: no {state_name} before the run ended (rc {processes[key].returncode})")
                    del waiting[key]
            time.sleep(0.005)

    # A thread watches the subprocesses while this one trains the uninterrupted references.
    watcher = threading.Thread(target=signal_each_run_after_its_first_save, daemon=True)
    watcher.start()

    from gan.options import parse_options as gan_options_of
    from gan.train import train as train_gan
    from nadsnet_pvt.options import parse_options as nadsnet_options_of
    from nadsnet_pvt.train import train as train_nadsnet

    def train_in_process(script: str, directory: Path, *extra: str) -> dict[str, torch.Tensor]:
        if script == "gan":
            model = train_gan(*gan_options_of(argv("gan", directory, *extra), gpu_available=False))
            return {**{f"G.{k}": v for k, v in state_of(model.netG).items()}, **{f"D.{k}": v for k, v in state_of(model.netD).items()}}
        return state_of(train_nadsnet(*nadsnet_options_of(argv("nadsnet", directory, *extra), gpu_available=False)))

    reference = {script: train_in_process(script, tmp_path / f"{script}_reference") for script in ("gan", "nadsnet")}
    watcher.join(timeout=300)
    outputs = {key: process.communicate(timeout=300) for key, process in processes.items()}
    assert not problems, (problems, outputs)

    for (script, how), (directory, state_name) in runs.items():
        out, err = outputs[(script, how)]
        returncode = processes[(script, how)].returncode
        if how == "kill":
            assert returncode == -signal.SIGKILL, (script, returncode, err)
            assert load_file(directory / state_name)["progress"]["epoch_batches"] > 0  # continued from mid-epoch
        else:
            # Ctrl-C: finishes the iteration, saves, says how to continue, exits 130, no traceback.
            assert returncode == 130, (script, err)
            assert "Traceback" not in err
            assert "SIGINT received: finishing this iteration, then saving the state" in err
            assert "interrupted (SIGINT): saved the state" in out and "--continue-train" in out
        resumed = train_in_process(script, directory, "--continue-train")
        assert_same_weights(resumed, reference[script])
        assert not no_temporaries(directory)
        if script == "gan":
            log_lines = (directory / "loss_log.txt").read_text().splitlines()
            # Cut back to the save, then continued: every iteration logged exactly once.
            assert [line.split(",")[1] for line in log_lines] == [f" iters: {i}" for i in range(1, 13)]
        else:
            log_text = (directory / "nadsnet_log.txt").read_text()
            assert log_text.count("epoch 1/2 (lr") == 1 and log_text.count("epoch 2/2 (lr") == 1


# --------------------------------------------------------------------------- NADS-Net: loading


def test_nadsnet_code_carrying_files_are_refused_and_never_run(tiny_dataset_dir, tmp_path, capsys):
    """--pretrained, --generator-weights and a --continue-train state that carry code."""
    data = nadsnet_data(tiny_dataset_dir, train=2)
    marker = tmp_path / MARKER_NAME
    evil = write_code_carrying_file(tmp_path / "evil.pth", marker)
    checkpoints = tmp_path / "run"
    for flags, fragment in (
        (("--pretrained", str(evil)), "refused to load weights file"),
        (("--gan-fraction", "1", "--generator-weights", str(evil)), "refused to load weights file"),
    ):
        assert run_nadsnet(nadsnet_args(data, checkpoints, *flags)) == 1
        line = one_error_line(capsys.readouterr().err)
        assert fragment in line and str(evil) in line and "nothing in it was run" in line
        assert not marker.exists() and not checkpoints.exists()

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    write_code_carrying_file(resumed / "nadsnet_train_state.pth", marker)
    assert run_nadsnet(nadsnet_args(data, resumed, "--continue-train")) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "refused to load training state" in line and "nadsnet_train_state.pth" in line
    assert not marker.exists() and sorted(p.name for p in resumed.iterdir()) == ["nadsnet_train_state.pth"]


def test_nadsnet_mismatched_generator_and_pretrained_files_are_explained(tiny_dataset_dir, tmp_path, capsys):
    data = nadsnet_data(tiny_dataset_dir, train=2)
    # ngf 8 weights beside a configuration that says ngf 16 (files from two runs mixed up).
    generator = tiny_generator_file(tmp_path / "g" / "latest_net_G.pth", ngf=8)
    config = json.loads(generator.with_suffix(".json").read_text())
    generator.with_suffix(".json").write_text(json.dumps(dict(config, ngf=16)))
    checkpoints = tmp_path / "run"
    assert run_nadsnet(nadsnet_args(data, checkpoints, "--gan-fraction", "1", "--generator-weights", str(generator))) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "latest_net_G.pth does not fit" in line and "shape mismatch" in line and "it fits a generator with ngf 8" in line

    # A discriminator given as the generator: says what the file holds.
    discriminator = tmp_path / "d" / "latest_net_D.pth"
    save_network(build_discriminator(discriminator_config(4)), discriminator, discriminator_config(4))
    assert run_nadsnet(nadsnet_args(data, checkpoints, "--gan-fraction", "1", "--generator-weights", str(discriminator))) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "is not a SPADE generator" in line and "MultiscaleDiscriminator" in line and "ndf 4" in line

    # A generator given as --pretrained NADS-Net weights: nothing fits, and the message says why.
    assert run_nadsnet(nadsnet_args(data, checkpoints, "--pretrained", str(generator))) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "no tensor fits NADS-Net" in line and "a SPADE generator (ngf 8)" in line
    assert not checkpoints.exists()


# --------------------------------------------------------------------------- NADS-Net: divergence, failed saves


def _nadsnet_nan_on_call(monkeypatch, bad_call: int, on_call=None):
    from nadsnet_pvt.trainer import NADSNetTrainer

    original = NADSNetTrainer.losses
    calls = {"n": 0}

    def patched(self, *args, **kwargs):
        if self.net.training:  # train steps only (validation runs in eval mode)
            calls["n"] += 1
            if on_call is not None:
                on_call(self, calls["n"])
        losses, predictions = original(self, *args, **kwargs)
        if self.net.training and calls["n"] == bad_call:
            losses = dict(losses, heatmap=losses["heatmap"] * float("nan"))
        return losses, predictions

    monkeypatch.setattr(NADSNetTrainer, "losses", patched)
    return calls


def test_nadsnet_nonfinite_loss_stops_and_keeps_last_save(tiny_dataset_dir, tmp_path, monkeypatch, capsys):
    data = nadsnet_data(tiny_dataset_dir, train=6)
    checkpoints = tmp_path / "run"
    seen = {}

    def remember(trainer, call):
        if call == 2:
            seen["files"] = snapshot(checkpoints)

    _nadsnet_nan_on_call(monkeypatch, 2, on_call=remember)
    assert run_nadsnet(nadsnet_args(data, checkpoints)) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "heatmap = nan" in line and "epoch 1, iteration 2" in line and "intact" in line
    kept = {k: v for k, v in snapshot(checkpoints).items() if not k.startswith("tensorboard")}
    assert kept == {k: v for k, v in seen["files"].items() if not k.startswith("tensorboard")}
    assert load_file(checkpoints / "nadsnet_train_state.pth")["progress"]["total_iterations"] == 1


def test_nadsnet_nonfinite_loss_skip_leaves_no_trace(tiny_dataset_dir, tmp_path, monkeypatch, capsys):
    data = nadsnet_data(tiny_dataset_dir, train=6)
    weights = {}
    _nadsnet_nan_on_call(monkeypatch, 2, on_call=lambda trainer, call: weights.update({call: state_of(trainer.net)}))
    assert run_nadsnet(nadsnet_args(data, tmp_path / "run", "--on-nonfinite", "skip")) == 0
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if "batch skipped" in line]
    assert len(warnings) == 1 and "heatmap = nan" in warnings[0] and "iteration 2:" in warnings[0]
    assert_same_weights(weights[3], weights[2], atol=0)  # weights and buffers as before the bad batch
    assert "1 batch(es) skipped" in out


def test_nadsnet_failed_save_is_one_line_and_previous_state_stays(tiny_dataset_dir, tmp_path, monkeypatch, capsys):
    data = nadsnet_data(tiny_dataset_dir, train=6)
    checkpoints = tmp_path / "run"
    real_replace = os.replace

    def replace(source, target, *args, **kwargs):
        if Path(target).name == "nadsnet_train_state.pth" and Path(target).exists():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    assert run_nadsnet(nadsnet_args(data, checkpoints)) == 1
    monkeypatch.undo()
    line = one_error_line(capsys.readouterr().err)
    assert str(checkpoints / "nadsnet_train_state.pth") in line and "No space left on device" in line
    assert not no_temporaries(checkpoints)
    state = load_file(checkpoints / "nadsnet_train_state.pth")["progress"]
    assert (state["epoch"], state["epoch_batches"], state["total_iterations"]) == (1, 1, 1)
