"""Both trainings as distributed jobs under torchrun (gloo, 2 CPU processes, tiny sizes).

A job of N processes with global batch B must train what one process trains with batch B
(up to the order of floating-point sums: the weights' difference stays within 2 % of how far
training moved them), write its files from process 0 only, continue exactly after a worker is
killed, run as two "nodes" on one host, and refuse what cannot work. torchrun launches are
few and short (CI runs this on 2 cores).
"""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common.training.checkpoints import load_file, load_state_dict_file, save_network
from common.models.factory import build_generator, generator_config
from common.models.init import init_weights
from conftest import SINGLE_THREAD_ENV

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(script: str, argv: list[str], processes: int = 2, extra: tuple[str, ...] = (), wait: bool = True):
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", *extra]
    if not extra:
        command += ["--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}", "--nnodes=1"]
    process = subprocess.Popen([*command, script, *argv], cwd=ROOT, env=SINGLE_THREAD_ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    if not wait:
        return process
    out, err = process.communicate(timeout=300)
    errors = [line for line in err.splitlines() if "error" in line.lower() and "elastic/errors" not in line]
    assert process.returncode == 0, (errors[:5], out[-2000:], err[-2000:])
    return out, err


def gan_argv(data, checkpoints: Path, *extra: str) -> list[str]:
    return ["--train-annotations", str(data.annotation_file), "--images-dir", str(data.images_dir),
            "--masks-dir", str(data.masks_dir), "--checkpoints-dir", str(checkpoints), "--preset", "cpu", "--amp", "off", "--seed", "3",
            "--image-size", "64", "--ngf", "4", "--ndf", "4", "--spade-hidden", "8", "--batch-size", "4",
            "--niter", "1", "--niter-decay", "0", "--num-workers", "0", "--print-freq", "1", "--display-freq", "2",
            "--save-latest-freq", "0", "--save-epoch-freq", "1", "--no-vgg-loss", "--nadsnet-weights", "none", *extra]


def nadsnet_argv(data, checkpoints: Path, generator: Path, *extra: str) -> list[str]:
    return ["--train-annotations", str(data.annotation_file), "--valid-annotations", str(data.valid_file),
            "--images-dir", str(data.images_dir), "--masks-dir", str(data.masks_dir),
            "--checkpoints-dir", str(checkpoints), "--preset", "cpu", "--amp", "off", "--seed", "3", "--image-size", "64",
            "--fpn-channels", "16", "--head-channels", "8", "--batch-size", "4", "--epochs", "2",
            "--num-workers", "0", "--gan-fraction", "0.5", "--generator-weights", str(generator),
            "--arm-augment", "highly", "--save-latest-freq", "1", "--display-samples", "1", *extra]


def moved_and_differing(first: dict, second: dict, start: dict, ignore: frozenset = frozenset()) -> tuple[float, float]:
    """(how far training moved the weights from `start`, how far `first` and `second` differ),
    over weights and biases (not the normalisation statistics or power-iteration vectors), but
    not the `ignore`d ones."""
    keys = [key for key in first if key.endswith(("weight", "weight_orig", "bias")) and first[key].dtype.is_floating_point
            and key not in ignore]
    moved = sum(float(((first[key] - start[key]) ** 2).sum()) for key in keys) ** 0.5
    differing = sum(float(((first[key] - second[key]) ** 2).sum()) for key in keys) ** 0.5
    return moved, differing


def without_effect(network: torch.nn.Module, channels: int, size: int) -> frozenset:
    """The parameters no output depends on: the biases of convolutions followed by SPADE's
    parameter-free batch norm, which subtracts them again. Their gradient is zero in exact
    arithmetic and float rounding noise in float32, which Adam's first step (about lr x the
    gradient's sign) turns into full-size steps in random directions, so the two runs differ
    there by design. Found in float64: gradients below 1e-9 of the largest."""
    network = copy.deepcopy(network).double().train()
    torch.manual_seed(0)
    network(torch.rand(2, channels, size, size, dtype=torch.float64)).square().mean().backward()
    norms = {name: float(p.grad.abs().max()) if p.grad is not None else 0.0 for name, p in network.named_parameters()}
    largest = max(norms.values())
    return frozenset(name for name, norm in norms.items() if norm < 1e-9 * largest)


def initial_gan(argv: list[str]) -> dict[str, dict]:
    """G's and D's weights before training, as the script builds them (seeded)."""
    from common.parallel.devices import Placement
    from common.training.runlog import RunLog
    from gan.options import parse_options
    from gan.train import build_model

    options, _ = parse_options(argv, gpu_available=False)
    cpu = torch.device("cpu")
    model, _ = build_model(options, Placement(cpu, cpu), RunLog(os.devnull, hold=True, echo=False))
    from common.posedata.pose import SEMANTIC_CHANNELS
    ignored = without_effect(model.netG, SEMANTIC_CHANNELS, options.image_size)
    return {"G": copy.deepcopy(model.netG.state_dict()), "D": copy.deepcopy(model.netD.state_dict()), "ignored": ignored}


def initial_nadsnet(argv: list[str]) -> dict:
    from common.training.runlog import RunLog
    from nadsnet_pvt.options import parse_options
    from nadsnet_pvt.train import build_network

    options, _ = parse_options(argv, gpu_available=False)
    return build_network(options, torch.device("cpu"), RunLog(os.devnull, hold=True, echo=False))[0].state_dict()


@pytest.fixture
def tiny_generator(tmp_path) -> Path:
    torch.manual_seed(0)
    config = generator_config(2, 64, spade_hidden=8)
    generator = build_generator(config)
    init_weights(generator)
    return save_network(generator, tmp_path / "generator" / "latest_net_G.pth", config)


def test_gan_job_of_two_trains_what_one_process_trains_and_two_nodes_work(tiny_dataset_dir, tmp_path):
    from gan.train import main

    data = tiny_dataset_dir(num_images=8, width=96, height=80)
    one, two, nodes = tmp_path / "one", tmp_path / "two", tmp_path / "nodes"
    initial = initial_gan(gan_argv(data, one))
    assert main(gan_argv(data, one)) == 0
    out, err = torchrun("train_gan.py", gan_argv(data, two))
    assert "process 1 of 2 (gloo" in out and err.count("Traceback") == 0
    assert "FutureWarning" not in err, err  # none from the project's own calls
    for network in ("G", "D"):
        single = load_state_dict_file(one / f"latest_net_{network}.pth")
        job = load_state_dict_file(two / f"latest_net_{network}.pth")
        ignored = initial["ignored"] if network == "G" else frozenset()
        moved, differing = moved_and_differing(single, job, initial[network], ignored)
        print(f"GAN {network}: training moved the weights {moved:.4g}, the job differs by {differing:.3g} "
              f"({len(ignored)} tensors without effect left out)")
        assert differing <= 0.02 * moved, (network, moved, differing)
    # Process 0 alone wrote: the same files as one process, each log line once.
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert [line.split(",")[1] for line in (two / "loss_log.txt").read_text().splitlines()] == \
        [f" iters: {i}" for i in range(1, 3)]
    options_text = (two / "opt.txt").read_text()
    assert "world_size: 2" in options_text and "backend: gloo" in options_text and "devices: GAN cpu" in options_text

    # Two "nodes" on one host: two torchrun agents meeting at a c10d rendezvous.
    port = free_port()
    agents = [torchrun("train_gan.py", gan_argv(data, nodes), processes=1, wait=False,
                       extra=("--nnodes=2", f"--node-rank={rank}", "--rdzv-backend=c10d",
                              f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=two-nodes"))
              for rank in range(2)]
    for agent in agents:
        agent.communicate(timeout=300)
        assert agent.returncode == 0
    two_nodes = load_state_dict_file(nodes / "latest_net_G.pth")
    assert all(torch.equal(two_nodes[key], value) for key, value in load_state_dict_file(two / "latest_net_G.pth").items())


def worker_pids(agent: subprocess.Popen) -> dict[int, int]:
    """local rank -> pid of the agent's worker processes."""
    children = subprocess.run(["pgrep", "-P", str(agent.pid)], capture_output=True, text=True).stdout.split()
    ranks = {}
    for pid in map(int, children):
        try:
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in environment:
            if item.startswith(b"LOCAL_RANK="):
                ranks[int(item.split(b"=")[1])] = pid
    return ranks


def test_nadsnet_job_equals_one_process_and_continues_exactly_after_a_worker_is_killed(
        tiny_dataset_dir, tiny_generator, tmp_path):
    from nadsnet_pvt.train import main

    data = tiny_dataset_dir(num_images=10, width=96, height=80)  # 8 to train on, 2 to validate (one per process)
    persons = [a for a in data.annotations if a["label"] == "Person"]
    data.valid_file = data.root / "valid.json"
    data.valid_file.write_text(json.dumps({"annotations": persons[8:]}))
    data.annotation_file = data.root / "train.json"
    data.write_annotations({"annotations": persons[:8]})
    one, two, killed = tmp_path / "one", tmp_path / "two", tmp_path / "killed"
    initial = initial_nadsnet(nadsnet_argv(data, one, tiny_generator))
    assert main(nadsnet_argv(data, one, tiny_generator)) == 0
    torchrun("train_nadsnet.py", nadsnet_argv(data, two, tiny_generator))
    single = load_file(one / "nadsnet_train_state.pth")["parts"]["nadsnet"]
    job = load_file(two / "nadsnet_train_state.pth")["parts"]["nadsnet"]
    moved, differing = moved_and_differing(single, job, initial)
    print(f"NADS-Net: training moved the weights {moved:.4g}, the job differs by {differing:.3g}")
    assert differing <= 0.02 * moved, (moved, differing)
    for name in ("nadsnet_metrics.jsonl",):  # validation reduced over the processes: one process's numbers
        ones = [json.loads(line) for line in (one / name).read_text().splitlines()]
        twos = [json.loads(line) for line in (two / name).read_text().splitlines()]
        assert [r["present"] for r in ones] == [r["present"] for r in twos]
        assert all(abs(a["valid_loss"] - b["valid_loss"]) <= 0.05 * abs(a["valid_loss"]) for a, b in zip(ones, twos))

    # Kill worker 1 after the job's second save: the job goes down within 60 s, nothing saved after.
    agent = torchrun("train_nadsnet.py", nadsnet_argv(data, killed, tiny_generator), wait=False)
    deadline = time.monotonic() + 240
    state_file = killed / "nadsnet_train_state.pth"
    while not (state_file.exists() and load_file(state_file)["progress"]["total_iterations"] >= 2):
        assert time.monotonic() < deadline and agent.poll() is None, agent.communicate()
        time.sleep(0.05)
    os.kill(worker_pids(agent)[1], signal.SIGKILL)
    killed_at = time.monotonic()
    out, err = agent.communicate(timeout=120)
    assert agent.returncode != 0 and time.monotonic() - killed_at < 60
    saved = load_file(state_file)["progress"]["total_iterations"]
    assert saved < 4  # 2 epochs x 1 batch... the run did not finish, and nothing after the kill
    torchrun("train_nadsnet.py", nadsnet_argv(data, killed, tiny_generator, "--continue-train"))
    resumed = load_file(state_file)["parts"]["nadsnet"]
    assert all(torch.allclose(resumed[key], job[key], atol=1e-6, rtol=0) for key in job)

    # Continuing under another number of processes is refused, with one line.
    assert main(nadsnet_argv(data, killed, tiny_generator, "--continue-train", "--epochs", "3")) == 1


def test_batch_that_does_not_split_over_the_processes_is_refused(tiny_dataset_dir, tmp_path, monkeypatch, capsys):
    from gan.train import main

    data = tiny_dataset_dir(num_images=4, width=96, height=80)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(gan_argv(data, tmp_path / "run", "--batch-size", "3")) == 2
    line = capsys.readouterr().err.strip()
    assert "--batch-size 3: the global batch must split evenly over the job's 2 processes (e.g. 2)" in line
    assert not (tmp_path / "run").exists()
