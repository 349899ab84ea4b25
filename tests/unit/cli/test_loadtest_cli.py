"""``inferscale loadtest`` arguments that cannot work: exit 2 before any request is sent."""

import pytest

from inferscale.cli.main import main

# Port 9 (discard) on loopback: nothing in these tests may get as far as connecting.
URL = "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stages", "30s@2", "--ramp", "5s"], "--ramp goes with --rate"),
        (["--rate", "5", "--speedup", "2"], "--speedup goes with --trace"),
        (["--rate", "5", "--limit", "2"], "--limit goes with --trace"),
        (["--stages", "30s"], "needs DURATION@RATE"),
        (["--rate", "5", "--duration", "10s", "--ramp", "20s"], "ramp must be between"),
        (["--trace", "/nonexistent/trace.csv"], "cannot read the trace"),
        (["--rate", "5", "--trace-format", "azure"], "--trace-format goes with --trace"),
        (["--rate", "5", "--expect-scaling", "--no-cluster"], "--expect-scaling needs the cluster"),
    ],
)
def test_bad_combinations_exit_2_with_a_message(args, message, capsys):
    assert main(["loadtest", "--url", URL, *args]) == 2
    assert message in capsys.readouterr().err


def test_a_bad_url_exits_2(capsys):
    assert main(["loadtest", "--url", "ftp://x", "--rate", "1"]) == 2
    assert "is not an http:// or https:// URL" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("hello,world\n", "unknown format"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\nx,y,z\n", "no valid request rows"),
        ("", "no valid request rows"),
    ],
)
def test_an_unusable_trace_exits_2_before_any_request(tmp_path, capsys, content, message):
    path = tmp_path / "t.csv"
    path.write_text(content)
    assert main(["loadtest", "--url", URL, "--trace", str(path)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["--rate", "0"],
        ["--rate", "-1"],
        ["--rate", "5", "--max-in-flight", "0"],
        ["--rate", "5", "--max-error-ratio", "2"],
        ["--rate", "5", "--duration", "soon"],
        ["--rate", "5", "--stages", "1s@1"],
        [],
    ],
)
def test_argparse_refuses_bad_values(args):
    with pytest.raises(SystemExit) as info:
        main(["loadtest", "--url", URL, *args])
    assert info.value.code == 2
