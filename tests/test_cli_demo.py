"""The `vidiff demo` command and the command-line entry point."""

import pytest

from vidiff.cli import main


def test_demo_writes_videos_and_table(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path), "--frames", "3", "--size", "4", "--num", "1",
                 "--check-samples", "64", "--nll-samples", "8"])
    assert code == 0
    names = {p.name for p in tmp_path.iterdir()}
    for stem in ["data", "noise_mixed", "progressive_dpmpp_2m", "decomposed_ddim"]:
        assert {f"{stem}.gif", f"{stem}.mp4", f"{stem}.png"} <= names
    out = capsys.readouterr().out
    assert "| progressive |" in out and "true NLL" in out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_bad_option_exits_with_usage(capsys):
    with pytest.raises(SystemExit) as err:
        main(["demo", "--frames", "many"])
    assert err.value.code == 2
    assert "--frames" in capsys.readouterr().err
