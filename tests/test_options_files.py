"""Options a user can see, save and feed back: --help names what each preset sets,
--print-config prints the resolved options, a run's options file (or a hand-edited one) is read
back by --config (the preset < the file < the flags), and a run reruns from its own file."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from common.errors import OptionError
from gan.options import parse_options as gan_options
from nadsnet_pvt.options import parse_options as nadsnet_options
from test_run_skeleton import nadsnet_argv

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("script", ["gan.train", "nadsnet_pvt.train"])
def test_help_names_what_each_preset_sets(script, capsys):
    module = importlib.import_module(script)
    assert module.main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text
    assert "input size S (a multiple of 32) [cpu: " in text and "; seed: 384]" in text
    assert "--batch-size BATCH_SIZE samples per iteration" in text


def test_print_config_prints_the_resolved_options_and_writes_nothing(tmp_path, capsys):
    folder = tmp_path / "never"
    with pytest.raises(SystemExit) as exit_request:
        nadsnet_options(["--preset", "cpu", "--lr", "3e-4", "--print-config", "--checkpoints-dir", str(folder)], False)
    assert exit_request.value.code == 0 and not folder.exists()
    lines = {line.split(":")[0].strip(): line.split(":", 1)[1].strip() for line in capsys.readouterr().out.splitlines()
             if ":" in line}
    assert lines["lr"] == "0.0003" and lines["image_size"] == "128" and lines["optimizer"] == "adamw"
    assert "print_config" not in lines and "config" not in lines


def test_a_hand_edited_file_sits_between_the_preset_and_the_flags(tmp_path):
    config = tmp_path / "mine.txt"
    config.write_text("# my settings\n\nepochs: 3\n   lr: 0.002\nbatch_size: 2\nmax_iterations: 7\n"
                      "checkpoints_dir: /elsewhere\ninclude_background: True\ngan_device: None\n")
    options, _ = nadsnet_options(["--preset", "cpu", "--config", str(config), "--batch-size", "4"], False)
    assert (options.epochs, options.lr, options.batch_size) == (3, 0.002, 4)  # file over preset, flag over file
    assert options.include_background is True and options.gan_device is None
    assert options.max_iterations is None and options.checkpoints_dir == Path("checkpoints")  # never from a file
    assert options.fpn_channels == 64 and options.optimizer == "adamw"  # the cpu preset's, untouched by the file


@pytest.mark.parametrize("line, fragment", [
    ("learning_rate: 0.1", "line 2: 'learning_rate': not an option of train_gan.py"),
    ("lr: -1", "line 2: lr: expected a number > 0, got -1"),
    ("gan_mode: shout", "line 2: gan_mode: 'shout' is not one of"),
    ("no_html: yes", "line 2: no_html: expected True or False, got 'yes'"),
    ("just words", "line 2: 'just words': not an option"),
])
def test_a_bad_file_line_is_refused_naming_the_file_and_line(tmp_path, line, fragment):
    config = tmp_path / "bad.txt"
    config.write_text(f"ngf: 8\n{line}\n")
    with pytest.raises(OptionError) as refused:
        gan_options(["--config", str(config)], False)
    assert str(config) in str(refused.value) and fragment in str(refused.value)


def test_a_run_reruns_from_its_options_file_to_the_same_first_losses(tiny_dataset_dir, tmp_path):
    from nadsnet_pvt.train import main

    data = tiny_dataset_dir(num_images=6, width=96, height=80)
    first, again = tmp_path / "first", tmp_path / "again"
    argv = nadsnet_argv(data, first, "--print-freq", "1", "--num-workers", "0", "--seed", "5", "--lr", "3e-3")
    assert main([*argv, "--max-iterations", "2"]) == 0
    assert main(["--config", str(first / "nadsnet_opt.txt"), "--checkpoints-dir", str(again),
                 "--max-iterations", "2"]) == 0
    losses = [(folder / "nadsnet_log.txt").read_text().split("(epoch: 1, iters: 1,")[1].split(")")[1].splitlines()[0]
              for folder in (first, again)]
    assert losses[0] == losses[1] and "total:" in losses[0]
