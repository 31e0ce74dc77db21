"""`tfgate demo`, run exactly as `make demo` runs it, shows what it claims and cleans up."""

from __future__ import annotations

import os
import pathlib
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading

import pytest

from tfgate_dev import demo

TFGATE = pathlib.Path(sys.executable).with_name("tfgate")
COMMAND = [str(TFGATE), "demo"] if TFGATE.exists() else [sys.executable, "-m", "proxy.cli", "demo"]
ENV = {**os.environ, "PYTHONIOENCODING": "utf-8"}


def _temp_dir(output: str) -> pathlib.Path:
    match = re.search(r"^Setting up in (\S+):", output, re.MULTILINE)
    assert match, output
    return pathlib.Path(match.group(1))


@pytest.mark.tf
class TestDemo:
    def test_demo_shows_allowed_and_refused_calls(self):
        """Every step passes: one real Predict result over gRPC and one over REST, seven
        refusals the model server never saw, their audit lines; exit 0 and no temporary
        files left behind."""
        done = subprocess.run(COMMAND, capture_output=True, text=True, timeout=300, env=ENV)
        out = done.stdout
        assert done.returncode == 0, out + done.stderr[-3000:]
        assert "✔ ALLOWED  x = [1, 2, 3] -> y = [3.5, 4.0, 4.5]" in out
        assert '✔ ALLOWED  POST :predict {"instances": [1, 2, 3]} -> {"predictions": [3.5, 4.0, 4.5]}' in out
        assert re.search(r"✘ REFUSED  HTTP 413: body > max 16777216 bytes decoded", out)
        assert out.count("✘ REFUSED") == 7
        assert out.count("the model server never saw it") == 7
        assert "UNAUTHENTICATED: token has expired" in out
        # the expired token's refusal is audited with the certificate that verified
        assert re.search(rf"^  \S+ deny +token-expired +Predict +- +{demo.TEAM_A}$", out,
                         re.MULTILINE), out
        assert "UNAVAILABLE" in out  # no client certificate: the handshake fails
        assert 'PERMISSION_DENIED: model "half_plus_two" is not allowed' in out
        assert 'PERMISSION_DENIED: signature "times_three"' in out
        assert "HandleReloadConfigRequest is not allowed" in out
        assert re.search(r"(RESOURCE_EXHAUSTED|INVALID_ARGUMENT): .*1000000000", out)
        for reason in ("allowed", "model-not-allowed", "signature-not-allowed",
                       "method-not-allowed", "limit-exceeded"):
            assert re.search(rf"^  \S+ (allow|deny) +{reason} ", out, re.MULTILINE), reason
        assert "FAIL" not in out
        assert "every step behaved as described" in out
        assert not _temp_dir(out).exists()

    def test_keep_prints_commands_that_work_and_ctrl_c_cleans_up(self):
        """With --keep the printed client and explain commands run as shown, and Ctrl-C
        stops everything, removes the files and exits 0."""
        proc = subprocess.Popen([*COMMAND, "--keep"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=ENV)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
        try:
            out = ""
            while "Press Ctrl-C" not in out:
                out += lines.get(timeout=300)
            commands = _commands(out)
            root = _temp_dir(out)
            allowed = _run(commands["allowed: team A"], root)
            assert allowed.returncode == 0 and "y = [3.5, 4.0, 4.5]" in allowed.stdout
            huge = _run(commands["refused before the model server"], root)
            assert huge.returncode == 1 and "REFUSED" in huge.stdout
            stale = _run(commands["refused UNAUTHENTICATED"], root)
            assert stale.returncode == 1 and "UNAUTHENTICATED" in stale.stdout + stale.stderr
            explained = _run(commands["ask the policy"], root)
            assert explained.stdout.startswith("DENY") and "signature-not-allowed" in explained.stdout
            assert explained.returncode == 1  # explain exits 1 on DENY
            minted = _run(commands["mint a fresh"].partition(" > ")[0], root)
            assert minted.returncode == 0 and minted.stdout.count(".") == 2, minted.stderr
            (root / "token.jwt").write_text(minted.stdout)
            batch = _run(commands["the batch job's token"], root)
            assert batch.returncode == 0, batch.stdout + batch.stderr
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(60) == 0
        assert not root.exists()


@pytest.mark.tf
def test_cluster_demo_allows_a_remote_op_and_refuses_read_file():
    """`tfgate demo --cluster`: a real TF client and worker through tfgate egress and
    ingress over mTLS; remote ops and a tf.function computed by the worker, ReadFile
    refused by tfgate (the egress and, sent around it, the worker's ingress), a stranger
    refused; exit 0 and no temporary files left."""
    from tests.tfcluster import namespaces_unavailable

    if namespaces_unavailable():
        pytest.skip(namespaces_unavailable())
    done = subprocess.run([*COMMAND, "--cluster"], capture_output=True, text=True,
                          timeout=300, env=ENV)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr[-3000:]
    assert "✔ ALLOWED  [3.0, 5.0, 7.0]  (computed by the TF worker)" in out
    assert "✔ ALLOWED  14.0" in out
    assert out.count("✘ REFUSED") == 3
    assert out.count('op "ReadFile"') >= 2 and "refused by the ingress tfgate (op-not-allowed)" in out
    assert "(no-rule-for-principal)" in out
    assert "FAIL" not in out and "every step behaved as described" in out
    assert not _temp_dir(out).exists()


class _Commands(dict):
    def __getitem__(self, prefix: str) -> str:
        return next(v for k, v in self.items() if k.startswith(prefix))


def _commands(output: str) -> dict[str, str]:
    """The command printed under each `# comment` line, found by the comment's start
    (`\\` continuation lines joined)."""
    text = output.replace("\\\n", " ")
    return _Commands(re.findall(r"^  # (.+)\n  (.+)$", text, re.MULTILINE))


def _run(command: str, cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(shlex.split(command), cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=ENV)


class TestMissingRequirements:
    def test_says_to_run_make_setup_when_tensorflow_is_missing(self, monkeypatch, capsys):
        """Without TensorFlow the demo explains what to do and exits 2, starting nothing."""
        monkeypatch.setattr(demo.importlib.util, "find_spec",
                            lambda name: None if name == "tensorflow" else object())
        assert demo.run_demo(keep=False) == 2
        assert "run `make setup` first" in capsys.readouterr().out.lower()
