"""The run skeleton both trainings share (common.training.run): stop requests sent to the whole job,
one run per folder, bounded pictures and checkpoints, provenance and format, bad options.

Stop requests are tested as a scheduler sends them: the training runs in a new session
(its own process group, 2 loader workers) and the whole group gets the signal with killpg, at
a chosen moment (start-up, an iteration, validation). The moment is chosen inside the child:
a small wrapper replaces one function of the training by one that signals its own group and
then carries on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from common.training.checkpoints import load_file
from common.training.files import save_atomic
from common.training.run_folder import LOCK_NAME
from common.posedata.visualize import Gallery, GalleryEntry, save_png
from conftest import SINGLE_THREAD_ENV

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def gan_argv(data, checkpoints: Path, *extra: str) -> list[str]:
    return ["--train-annotations", str(data.annotation_file), "--images-dir", str(data.images_dir),
            "--masks-dir", str(data.masks_dir), "--checkpoints-dir", str(checkpoints), "--preset", "cpu", "--amp", "off",
            "--image-size", "32", "--ngf", "4", "--ndf", "4", "--batch-size", "2", "--niter", "2", "--niter-decay", "0",
            "--num-workers", "2", "--print-freq", "1", "--display-freq", "0", "--save-latest-freq", "0",
            "--save-epoch-freq", "100", "--no-vgg-loss", "--nadsnet-weights", "none", "--no-html", *extra]


def nadsnet_argv(data, checkpoints: Path, *extra: str) -> list[str]:
    return ["--train-annotations", str(data.annotation_file), "--valid-annotations", str(data.annotation_file),
            "--images-dir", str(data.images_dir), "--masks-dir", str(data.masks_dir),
            "--checkpoints-dir", str(checkpoints), "--preset", "cpu", "--amp", "off", "--image-size", "32", "--batch-size", "2",
            "--epochs", "2", "--num-workers", "2", "--gan-fraction", "0", "--arm-augment", "none",
            "--save-latest-freq", "0", "--display-samples", "0", "--no-html", *extra]


# The child: install the stop handler first (as the scripts do), replace `target` by a function
# that signals the child's whole process group on its `call`-th call, then run the script's main.
CHILD = textwrap.dedent('''
    import importlib, os, signal, sys
    sys.path.insert(0, {root!r})
    from common.training.stopping import STOP
    STOP.install()
    module_name, owner_name, attribute = {target!r}
    owner = importlib.import_module(module_name)
    if owner_name:
        owner = getattr(owner, owner_name)
    original = getattr(owner, attribute)
    calls = [0]
    def signalling(*args, **kwargs):
        calls[0] += 1
        if calls[0] == {call}:
            os.killpg(os.getpgid(0), signal.{signal_name})
        return original(*args, **kwargs)
    setattr(owner, attribute, signalling)
    script = importlib.import_module({script!r})
    sys.exit(script.main({argv!r}))
''')


def start_child(script: str, argv: list[str], target: tuple[str, str, str], call: int, signal_name: str) -> subprocess.Popen:
    code = CHILD.format(root=str(ROOT), target=target, call=call, signal_name=signal_name, script=script, argv=argv)
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=SINGLE_THREAD_ENV, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_stop_requests_sent_to_the_whole_process_group(tiny_dataset_dir, tmp_path):
    """SIGTERM / SIGINT to the job's process group (the loader workers get it too), during
    start-up, an iteration or validation: one message, the last complete state saved (nothing
    written before the first iteration), exit 143 / 130, no traceback."""
    data = tiny_dataset_dir(num_images=6, width=96, height=80)
    cases = {
        # name: (script, argv, function to signal in, call, signal, exit code, iterations saved or None)
        "gan start-up": ("gan.train", gan_argv, ("gan.train", "", "build_model"), 1, "SIGTERM", 143, None),
        "gan iteration": ("gan.train", gan_argv, ("gan.trainer", "GANTrainer", "step"), 2, "SIGTERM", 143, 2),
        "gan ctrl-c": ("gan.train", gan_argv, ("gan.trainer", "GANTrainer", "step"), 4, "SIGINT", 130, 4),
        "nadsnet iteration": ("nadsnet_pvt.train", nadsnet_argv, ("nadsnet_pvt.trainer", "NADSNetTrainer", "train_step"),
                              2, "SIGTERM", 143, 2),
        "nadsnet validation": ("nadsnet_pvt.train", nadsnet_argv, ("nadsnet_pvt.metrics", "ValidationMetrics", "update"),
                               2, "SIGTERM", 143, 3),
    }
    children = {}
    for name, (script, argv, target, call, signal_name, _, _) in cases.items():
        directory = tmp_path / name.replace(" ", "_")
        children[name] = (directory, start_child(script, argv(data, directory), target, call, signal_name))
    for name, (directory, child) in children.items():
        out, err = child.communicate(timeout=240)
        signal_name, code, iterations = cases[name][4:]
        assert child.returncode == code, (name, out, err)
        assert "Traceback" not in err and "killed by signal" not in err, (name, err)
        assert err.count(f"{signal_name} received") == 1, (name, err)  # one message, not one per process
        if iterations is None:
            assert "before training starts" in err and "nothing was written" in out
            assert not directory.exists(), name  # nothing written, not even the folder
            continue
        state = load_file(directory / ("gan_train_state.pth" if name.startswith("gan") else "nadsnet_train_state.pth"))
        assert state["progress"]["total_iterations"] == iterations, name
        assert f"interrupted ({signal_name}): saved the state" in out and "--continue-train" in out
        assert (directory / LOCK_NAME).read_text() == ""  # released
    validation = load_file(tmp_path / "nadsnet_validation" / "nadsnet_train_state.pth")["progress"]
    assert (validation["epoch"], validation["epoch_batches"]) == (2, 0)  # the epoch's validation finished first


def test_two_runs_started_at_the_same_moment_on_one_folder(tiny_dataset_dir, tmp_path):
    """Exactly one trains; the other is refused before writing anything, naming the first."""
    data = tiny_dataset_dir(num_images=6, width=96, height=80)
    folder = tmp_path / "shared"
    argv = [sys.executable, "train_gan.py", *gan_argv(data, folder, "--niter", "6", "--num-workers", "0")]
    runs = [subprocess.Popen(argv, cwd=ROOT, env=SINGLE_THREAD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    results = [(run.pid, *run.communicate(timeout=240), run.returncode) for run in runs]
    codes = sorted(code for _, _, _, code in results)
    assert codes == [0, 1], results
    (winner, _, _, _), (_, _, refused_err, _) = sorted(results, key=lambda result: result[3])
    line = refused_err.strip().splitlines()[-1]
    assert f"is in use by another run (pid {winner} on " in line and "since 20" in line
    iterations = [int(l.split("iters: ")[1].split(",")[0]) for l in (folder / "loss_log.txt").read_text().splitlines()]
    assert iterations == list(range(1, 19))  # one run's lines, each once


def test_stale_lock_is_taken_over_and_a_foreign_host_lock_refused(tiny_dataset_dir, tmp_path, capsys):
    from gan.train import main

    data = tiny_dataset_dir(num_images=4, width=96, height=80)
    gone = subprocess.Popen(["true"])
    gone.wait()
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_NAME).write_text(json.dumps({"pid": gone.pid, "host": os.uname().nodename, "since": "yesterday"}))
    assert main(gan_argv(data, folder, "--niter", "1", "--num-workers", "0")) == 0
    out = capsys.readouterr().out
    assert f"took over the lock of a run that did not end cleanly (pid {gone.pid}" in out
    assert (folder / LOCK_NAME).read_text() == ""

    (folder / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "today"}))
    assert main(gan_argv(data, folder, "--niter", "1", "--num-workers", "0", "--continue-train")) == 1
    err = capsys.readouterr().err
    assert "locked by a run on another host (pid 1 on elsewhere" in err and f"delete {folder / LOCK_NAME}" in err


def test_gallery_keeps_pictures_page_and_state_bounded(tmp_path):
    gallery = Gallery(tmp_path / "web", "index.html", recent=4, epochs_per_page=3)
    picture = np.zeros((4, 4, 3), np.uint8)
    for step in range(1, 101):  # 10 epochs of 10 display steps
        epoch = 1 + (step - 1) // 10
        name = f"e{epoch}_s{step}.png"
        save_png(gallery.image_dir / name, picture)
        gallery.add(GalleryEntry(epoch, step, f"step {step}", [(name, "x")]))
    kept = sorted(path.name for path in gallery.image_dir.iterdir())
    epoch_lasts = {f"e{e}_s{10 * e}.png" for e in range(1, 11)}
    recent = {f"e10_s{s}.png" for s in range(97, 101)}
    assert set(kept) == epoch_lasts | recent  # 4 recent + one per epoch, the rest deleted
    state = gallery.state_dict()
    assert len(state["recent"]) == 4 and len(state["epoch_last"]) <= 3 and state["archived_blocks"] == 3
    assert len(gallery.sections()) <= 4 + 3
    for block in range(3):
        archive = (tmp_path / "web" / gallery.archive_name(block)).read_text()
        assert all(f"e{e}_s{10 * e}.png" in archive for e in range(3 * block + 1, 3 * block + 4))
    restored = Gallery(tmp_path / "web", "index.html", recent=4, epochs_per_page=3)
    restored.load_state_dict(json.loads(json.dumps(state)))
    assert [s.heading for s in restored.sections()] == [s.heading for s in gallery.sections()]


def test_keep_epoch_checkpoints_provenance_and_state_format(tiny_dataset_dir, tmp_path, capsys):
    from gan.train import main

    data = tiny_dataset_dir(num_images=4, width=96, height=80)
    folder = tmp_path / "run"
    assert main(gan_argv(data, folder, "--niter", "4", "--num-workers", "0", "--save-epoch-freq", "1",
                         "--keep-epoch-checkpoints", "2")) == 0
    assert sorted(p.name for p in folder.glob("*_net_G.*")) == ["3_net_G.json", "3_net_G.pth", "4_net_G.json",
                                                               "4_net_G.pth", "latest_net_G.json", "latest_net_G.pth"]
    options_text = (folder / "opt.txt").read_text()
    state = load_file(folder / "gan_train_state.pth")
    for key in ("project_commit", "torch", "python"):
        assert key in options_text and state["provenance"][key]
    assert state["provenance"]["torch"] == str(torch.__version__)

    state["format"] = "pose-gan-train-state/1"
    save_atomic(state, folder / "gan_train_state.pth")
    capsys.readouterr()
    assert main(gan_argv(data, folder, "--niter", "4", "--num-workers", "0", "--continue-train")) == 1
    assert "is not a GAN training state of this version" in capsys.readouterr().err


@pytest.mark.parametrize("script, flags, fragment", [
    ("gan", ("--seed", "-3"), "--seed: expected a seed from 0 to"),
    ("gan", ("--image-size", "32", "--batch-size", "1"), "a batch needs at least 2 samples"),
    ("gan", ("--image-size", "50"), "expected a multiple of 32"),
    ("gan", ("--batch-size", "0"), "expected a whole number >= 1"),
    ("gan", ("--lr", "0"), "expected a number > 0"),
    ("gan", ("--beta1", "1.5"), "from 0 to below 1"),
    ("gan", ("--num-workers", "-1"), "expected a whole number >= 0"),
    ("gan", ("--niter", "0", "--niter-decay", "0"), "at least one epoch"),
    ("gan", ("--gan-device", "cuda:3"), "--gan-device cuda:3"),
    ("gan", ("--num-upsampling-layers", "most", "--image-size", "96"), "needs a multiple of 128"),
    ("nadsnet", ("--image-size", "32", "--batch-size", "2", "--gan-fraction", "0.5"), "single generated sample"),
    ("nadsnet", ("--gan-fraction", "2"), "from 0 to 1"),
    ("nadsnet", ("--display-samples", "-1"), "expected a whole number >= 0"),
])
def test_bad_options_are_one_line_exit_2_and_write_nothing(tiny_dataset_dir, tmp_path, capsys, script, flags, fragment):
    data = tiny_dataset_dir(num_images=4, width=96, height=80)
    folder = tmp_path / "run"
    if script == "gan":
        from gan.train import main

        argv = gan_argv(data, folder, "--num-workers", "0", *flags)
    else:
        from nadsnet_pvt.train import main

        argv = nadsnet_argv(data, folder, "--num-workers", "0", *flags)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and fragment in err, err
    assert "Traceback" not in err and not folder.exists()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forked loader workers are a POSIX matter")
def test_a_restart_right_after_kill_9_is_not_refused_by_orphaned_workers(tmp_path):
    """The lock is the main process's: a forked child (as a DataLoader worker is) that outlives
    a killed run does not keep the folder locked."""
    import signal
    import time

    from common.training.run_folder import RunLock

    script = textwrap.dedent("""
        import os, sys, time
        from pathlib import Path
        from common.training.run_folder import RunLock
        RunLock(Path(sys.argv[1])).acquire()
        child = os.fork()
        if child == 0:  # the orphan-to-be: lives on after its parent is killed
            time.sleep(60)
            os._exit(0)
        print(child, flush=True)
        time.sleep(60)
    """)
    run = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "run")], cwd=ROOT, env=SINGLE_THREAD_ENV,
                           stdout=subprocess.PIPE, text=True)
    worker = int(run.stdout.readline())
    try:
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
        time.sleep(0.2)
        os.kill(worker, 0)  # the orphan still runs
        lock = RunLock(tmp_path / "run")
        messages = lock.acquire()
        assert any("did not end cleanly" in message for message in messages), messages
        lock.release()
    finally:
        os.kill(worker, signal.SIGKILL)


def test_a_run_stopped_inside_its_first_epoch_leaves_weights_evaluate_accepts(tiny_dataset_dir, tmp_path, capsys):
    """No epoch ended, so no nadsnet_best.pth: the training state is what evaluate, predict and
    export read the weights from."""
    from common.models.factory import load_nadsnet
    from nadsnet_pvt.evaluate import main as evaluate_main
    from nadsnet_pvt.train import main as train_main

    data = tiny_dataset_dir(num_images=6, width=96, height=80)
    folder = tmp_path / "short"
    assert train_main(nadsnet_argv(data, folder, "--max-iterations", "1", "--num-workers", "0")) == 0
    assert not (folder / "nadsnet_best.pth").exists()
    state = folder / "nadsnet_train_state.pth"
    net, config = load_nadsnet(state)
    saved = load_file(state, "training state")["parts"]["nadsnet"]
    assert all(torch.equal(value, saved[name]) for name, value in net.state_dict().items())
    assert config["image_size"] == 32
    capsys.readouterr()
    assert evaluate_main(["--weights", str(state), "--annotations", str(data.annotation_file), "--images-dir",
                          str(data.images_dir), "--masks-dir", str(data.masks_dir), "--image-size", "32",
                          "--num-workers", "0"]) == 0
    assert "PCKt@0.2" in capsys.readouterr().out


def test_evaluate_predict_and_export_take_weights_and_data_from_a_run_folder(tiny_dataset_dir, tmp_path, capsys):
    """--run DIR: the run's weights (its best, else its training state's) and, for evaluate, its
    validation set; each flag given wins; a folder that holds no run is one line, exit 2."""
    import json

    from nadsnet_pvt.evaluate import main as evaluate_main
    from nadsnet_pvt.evaluate import parse_options as evaluate_options
    from nadsnet_pvt.export import parse_options as export_options
    from nadsnet_pvt.predict import main as predict_main
    from nadsnet_pvt.train import main as train_main

    data = tiny_dataset_dir(num_images=6, width=96, height=80)
    folder = tmp_path / "run"
    assert train_main(nadsnet_argv(data, folder, "--max-iterations", "1", "--num-workers", "0")) == 0
    args, _ = evaluate_options(["--run", str(folder), "--device", "cpu"])
    assert args.weights == folder / "nadsnet_train_state.pth"  # stopped inside its first epoch: no best yet
    assert (args.annotations, args.images_dir, args.masks_dir) == (data.annotation_file, data.images_dir, data.masks_dir)
    elsewhere = tmp_path / "other.json"
    args, _ = evaluate_options(["--run", str(folder), "--annotations", str(elsewhere), "--device", "cpu"])
    assert args.annotations == elsewhere and args.images_dir == data.images_dir
    (folder / "nadsnet_best.pth").write_bytes(b"")
    assert export_options(["--run", str(folder)]).weights == folder / "nadsnet_best.pth"
    assert export_options(["--run", str(folder)]).out == folder / "nadsnet.onnx"
    (folder / "nadsnet_best.pth").unlink()

    capsys.readouterr()
    assert evaluate_main(["--run", str(folder), "--num-workers", "0", "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["weights"] == str(folder / "nadsnet_train_state.pth")
    assert predict_main(["--run", str(folder), "--images", str(data.images_dir), "--out", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "predictions.json").is_file()

    capsys.readouterr()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert evaluate_main(["--run", str(empty)]) == 2
    assert "holds neither nadsnet_best.pth nor nadsnet_train_state.pth" in capsys.readouterr().err
    assert evaluate_main(["--annotations", str(data.annotation_file)]) == 2
    assert "--run DIR" in capsys.readouterr().err
    assert not (empty / "nadsnet.onnx").exists()


def test_a_bug_inside_a_network_keeps_its_traceback_and_a_user_mistake_stays_one_line(tiny_dataset_dir, tmp_path,
                                                                                       monkeypatch, capsys):
    """A ValueError raised inside the forward pass is a bug: it reaches the caller (Python
    prints its traceback); a bad device name is the user's: one line, exit 2."""
    from common.models.nadsnet import NADSNet
    from nadsnet_pvt.train import main as train_main

    data = tiny_dataset_dir(num_images=4, width=96, height=80)

    def broken_forward(self, images):
        raise ValueError("shapes (2, 64) and (32, 2) do not line up")

    monkeypatch.setattr(NADSNet, "forward", broken_forward)
    with pytest.raises(ValueError, match="do not line up") as raised:
        train_main(nadsnet_argv(data, tmp_path / "bug", "--num-workers", "0"))
    assert any(entry.name == "broken_forward" for entry in raised.traceback)
    capsys.readouterr()
    assert train_main(nadsnet_argv(data, tmp_path / "mistake", "--nadsnet-device", "cuda:7")) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of every event file in `folder`, as TensorBoard shows them
    (events hidden by a continued run's purge left out)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_both_trainings_write_losses_at_every_print_step_to_tensorboard(tiny_dataset_dir, tmp_path):
    """Losses at every print step, the epoch's numbers at its last iteration, one x axis
    (iterations) for both trainings."""
    from gan.train import main as gan_main
    from nadsnet_pvt.train import main as nadsnet_main

    data = tiny_dataset_dir(num_images=6, width=96, height=80)  # 3 batches of 2 per epoch
    assert nadsnet_main(nadsnet_argv(data, tmp_path / "nadsnet", "--print-freq", "2", "--num-workers", "0")) == 0
    scalars = tensorboard_scalars(tmp_path / "nadsnet" / "tensorboard" / "nadsnet")
    assert [step for step, _ in scalars["loss/total"]] == [2, 4, 6]
    assert [step for step, _ in scalars["valid/pckt"]] == [3, 6]
    assert [value for _, value in scalars["epoch"]] == [1.0, 2.0]
    assert gan_main(gan_argv(data, tmp_path / "gan", "--num-workers", "0")) == 0
    scalars = tensorboard_scalars(tmp_path / "gan" / "tensorboard" / "gan")
    assert [step for step, _ in scalars["loss/D_Fake"]] == [1, 2, 3, 4, 5, 6]
    assert [step for step, _ in scalars["lr"]] == [3, 6]


def test_a_continued_run_hides_what_the_interrupted_one_logged_after_its_save(tiny_dataset_dir, tmp_path):
    """A run killed after its save at iteration 4 had logged iterations 5 and 6 too: continued,
    TensorBoard shows each iteration once, with the continued run's values."""
    from torch.utils.tensorboard import SummaryWriter

    from gan.train import main as gan_main

    data = tiny_dataset_dir(num_images=6, width=96, height=80)
    folder = tmp_path / "gan"
    assert gan_main(gan_argv(data, folder, "--num-workers", "0", "--max-iterations", "4")) == 0
    killed = SummaryWriter(str(folder / "tensorboard" / "gan"))  # what the killed run wrote after its save
    for step in (5, 6):
        killed.add_scalar("loss/D_Fake", 1e6, step)
    killed.close()
    assert gan_main(gan_argv(data, folder, "--num-workers", "0", "--continue-train")) == 0
    shown = tensorboard_scalars(folder / "tensorboard" / "gan")["loss/D_Fake"]
    assert [step for step, _ in shown] == [1, 2, 3, 4, 5, 6]
    assert all(value < 1e6 for _, value in shown)


def test_short_runs_leave_a_picture_of_their_last_iteration_and_charts_with_their_points(tiny_dataset_dir, tmp_path):
    """Stopped before any display step or epoch end, both pages still show pictures; a chart of
    one point shows that point."""
    import cv2

    from common.posedata.visualize import plot_curves
    from gan.train import main as gan_main
    from nadsnet_pvt.train import main as nadsnet_main

    data = tiny_dataset_dir(num_images=6, width=96, height=80)
    gan = tmp_path / "gan"
    argv = [flag for flag in gan_argv(data, gan, "--num-workers", "0", "--max-iterations", "2", "--display-freq", "50")
            if flag != "--no-html"]
    assert gan_main(argv) == 0
    page = (gan / "web" / "index.html").read_text()
    assert "epoch 1, iteration 2" in page
    assert all((gan / "web" / "images" / f"epoch001_iter000002_{label}.png").is_file()
               for label in ("input_label", "synthesized_image", "real_image"))
    nadsnet = tmp_path / "nadsnet"
    argv = [flag for flag in nadsnet_argv(data, nadsnet, "--num-workers", "0", "--max-iterations", "1",
                                          "--display-samples", "2") if flag not in ("--no-html",)]
    assert nadsnet_main(argv) == 0
    page = (nadsnet / "web" / "nadsnet.html").read_text()
    assert "images/nadsnet_epoch001_train0.png" in page and "this epoch so far" in page

    plot = plot_curves(tmp_path / "one.png", {"loss": [(1.0, 5.0)]}, "one point", "iteration")
    picture = cv2.imread(str(plot))[..., ::-1].astype(int)
    line_colour = np.array([31, 119, 180])  # matplotlib's first colour, C0
    assert (np.abs(picture - line_colour).sum(axis=2) < 30).sum() > 5
