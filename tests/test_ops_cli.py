"""The operations side of the command line: --version, help on every option, `token
mint` (checked by tfgate's own token verifier), dev commands where tfgate_dev is absent
(as in the container image), the dev PKI's server SANs and default directory, and the
console log lines of a real `serve`."""

from __future__ import annotations

import argparse
import ipaddress
import pathlib
import signal
import subprocess
import sys

import jwt
import pytest
from cryptography import x509

from proxy import config
from proxy.authn.jwt import TokenVerifier
from proxy.cli import build_parser, main
from tests.rawbackend import RawBackend
from tests.serveproc import Serve, Site
from tfgate_dev import devpki

REPO = pathlib.Path(__file__).resolve().parent.parent


def _tfgate(*argv: str, block_dev: bool = False) -> subprocess.CompletedProcess[str]:
    """`tfgate ARGV` in a fresh interpreter; `block_dev` makes tfgate_dev unimportable."""
    prelude = "import sys; sys.modules['tfgate_dev'] = None; " if block_dev else "import sys; "
    code = prelude + "from proxy.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          cwd=REPO, timeout=60)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("tfgate ") and len(out.split()) >= 2


def _parsers(parser: argparse.ArgumentParser, name: str = "tfgate"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_option_and_command_has_help() -> None:
    """Every visible option of every command says what it does; every command has a
    description for its own --help."""
    for name, parser in _parsers(build_parser()):
        assert parser.description, f"{name} has no description"
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest}: no help"


def test_token_mint_is_accepted_by_tfgates_verifier(tmp_path: pathlib.Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A dev PKI with an issuer, then `token mint`: tfgate's own verifier accepts the
    token for that issuer and audience, with the subject and scopes asked for."""
    out = tmp_path / "pki"
    assert devpki.main([str(out), "--jwt-issuer", "https://dev.issuer"]) == 0
    capsys.readouterr()
    assert main(["token", "mint", "--dir", str(out), "--sub", "batch-job", "--scope",
                 "predict:churn", "--scope", "read", "--ttl", "120"]) == 0
    token = capsys.readouterr().out.strip()
    verifier = TokenVerifier(config.JWT.model_validate({"issuers": [{
        "issuer": "https://dev.issuer", "audiences": ["tfgate"], "algorithms": ["ES256"],
        "jwks_file": str(out / "jwks.json")}]}))
    principal = verifier.verify(token)
    assert principal.subject == "batch-job" and principal.scopes == {"predict:churn", "read"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 120 and jwt.get_unverified_header(token)["kid"]


def test_token_mint_errors_say_what_to_do(tmp_path: pathlib.Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "mint", "--dir", str(tmp_path), "--sub", "x"]) == 2
    assert "give --iss" in capsys.readouterr().err
    assert main(["token", "mint", "--dir", str(tmp_path), "--iss", "i", "--sub", "x"]) == 2
    assert "make-dev-pki --jwt-issuer" in capsys.readouterr().err
    devpki.main([str(tmp_path / "a"), "--jwt-issuer", "i"])
    devpki.main([str(tmp_path / "b"), "--jwt-issuer", "i"])
    capsys.readouterr()
    assert main(["token", "mint", "--key", str(tmp_path / "a" / "signing.key"), "--jwks",
                 str(tmp_path / "b" / "jwks.json"), "--iss", "i", "--sub", "x"]) == 2
    assert "no key in" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["token", "mint", "--sub", "x"], ["demo"]])
def test_dev_commands_without_tfgate_dev_say_they_are_dev_tooling(argv: list[str]) -> None:
    result = _tfgate(*argv, block_dev=True)
    assert result.returncode == 2
    assert "development tooling" in result.stderr and "Traceback" not in result.stderr


def test_the_proxy_commands_need_no_tfgate_dev(tmp_path: pathlib.Path) -> None:
    """As in the image: check, explain and --version work with tfgate_dev unimportable."""
    site = Site(tmp_path, "127.0.0.1:1")
    site.write_config(site.config())
    assert _tfgate("--version", block_dev=True).returncode == 0
    checked = _tfgate("check", "--config", str(site.config_path), block_dev=True)
    assert checked.returncode == 0 and "ok (1 rules" in checked.stdout, checked.stderr
    explained = _tfgate("explain", "--config", str(site.config_path), "--method", "Predict",
                        "--model", "m", "--spiffe", "spiffe://tfgate.test/ops/alice",
                        block_dev=True)
    assert explained.stdout.startswith("ALLOW"), explained.stderr


def test_dev_pki_server_sans_and_default_directory(tmp_path: pathlib.Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert devpki.DEFAULT_OUT == REPO / "certs" / "out"
    monkeypatch.setattr(devpki, "DEFAULT_OUT", tmp_path / "default")
    assert devpki.main(["--server-dns", "tfgate.ml.svc", "--server-ip", "10.1.2.3"]) == 0
    assert str(tmp_path / "default" / "server.pem") in capsys.readouterr().out
    cert = x509.load_pem_x509_certificate((tmp_path / "default" / "server.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "tfgate.ml.svc"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "10.1.2.3")]
    with pytest.raises(SystemExit):
        devpki.main([str(tmp_path / "x"), "--server-ip", "not-an-ip"])


def test_console_log_lines_of_a_real_serve(tmp_path: pathlib.Path) -> None:
    """The default console format: one `tfgate: start`, `tfgate: drain` and `tfgate:
    stop` line, each with its fields, and nothing else from tfgate."""
    backend = RawBackend()
    try:
        site = Site(tmp_path, backend.address)
        doc = site.config()
        del doc["logging"]
        site.write_config(doc)
        server = Serve(site.config_path)
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
    finally:
        backend.stop()
    lines = [line.rstrip("\n") for line in server.other if line.startswith("tfgate: ")]
    events = [line.split()[1] for line in lines]
    assert [e for e in events if e in ("start", "drain", "stop")] == ["start", "drain", "stop"]
    assert f"address={server.address}" in lines[events.index("start")]
    assert "in_flight=0" in lines[events.index("drain")]
